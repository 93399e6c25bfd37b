"""Batched torch augmentation that runs on the training device, one transform per module."""
