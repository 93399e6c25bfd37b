"""Training: trainer loop, strategies, patch sampling, augmentation, loss, checkpoints."""

# The version of what training computes. Raise it with any change that alters the trained model (augmentation,
# sampling, loss, initialisation, optimiser, schedule), so that benchmarks can tell runs of an older engine apart.
# 2: low-resolution simulation samples block centres; patch starts reach -ceil(pad / 2), as in nnU-Net.
ENGINE_VERSION = 2
