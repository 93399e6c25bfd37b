"""Inference: sliding window, predictor and export to the input grid."""
