"""Additive Gaussian noise (p=0.1 per sample), the noise level drawn per sample from (0, 0.1).

nnU-Net names this range ``noise_variance`` but uses the drawn value as the standard deviation of the noise; we do the
same and call it what it is. All channels of a sample share the level; the noise field itself is drawn on the
images' device from a generator seeded by the CPU generator.
"""

from __future__ import annotations

import torch

from covtransfer.training.augment.sampling import broadcastable, coin, device_generator, selected, uniform


class GaussianNoise:
    """Add zero-mean Gaussian noise with standard deviation drawn from ``std_range`` to a fraction ``p`` of samples."""

    def __init__(self, p: float = 0.1, std_range: tuple[float, float] = (0.0, 0.1)) -> None:
        self.p = p
        self.std_range = std_range

    def __call__(self, images: torch.Tensor, seg: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        batch = images.shape[0]
        apply = coin(generator, (batch,), self.p)
        stds = uniform(generator, (batch,), *self.std_range)
        noise_generator = device_generator(generator, images.device)
        if not apply.any():
            return images, seg
        index = selected(apply, images.device)
        chosen = images.index_select(0, index)
        noise = torch.randn(chosen.shape, generator=noise_generator, device=images.device, dtype=images.dtype)
        chosen = chosen + noise * broadcastable(stds[apply], chosen.dim(), images.dtype, images.device)
        return images.index_copy(0, index, chosen), seg
