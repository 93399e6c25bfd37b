"""Evaluation: metrics on arrays, folder evaluation, reports."""
