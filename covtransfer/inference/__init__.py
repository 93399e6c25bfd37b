"""Inference: sliding window, predictor and export to the input grid."""

# The version of how logits become a label map. Raise it with any change that alters the written prediction of a
# given model (sliding window, ensembling, export), so that benchmarks can tell predictions of an older one apart.
# 2: folds are averaged and resampled to the input grid as logits, then the argmax (nnU-Net's order); 1 did both
# on softmax probabilities. 3: the windows' Gaussian peaks at voxel patch // 2, as nnU-Net's (2 at the exact middle).
EXPORT_VERSION = 3
