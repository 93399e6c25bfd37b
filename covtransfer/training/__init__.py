"""Training: trainer loop, strategies, patch sampling, augmentation, loss, checkpoints."""
