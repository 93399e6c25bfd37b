"""Preprocessing: resampling, intensity normalisation and the per-case preprocessor."""
