"""Batched tensor augmentations: whole batches at once, on CPU or CUDA, seeded.

Digits and clothes are not mirror-symmetric in a label-preserving way for digits
(a flipped 2 is not a 2), so the augmentation is a small random affine warp: rotation,
shift and scale, never a flip.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AffineAugmentation:
    """Random rotation (degrees), shift (fraction of the image side) and scale."""

    max_rotation: float = 10.0
    max_shift: float = 0.08
    max_scale_change: float = 0.08
    chunk_size: int = 8192

    def to_dict(self):
        return asdict(self)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Warp uint8 images ``(N, C, H, W)``; returns a new uint8 tensor of the same shape.

        The parameters come from ``generator`` (a CPU generator), so the output depends
        only on its seed, not on the device or the chunking.
        """
        n = images.shape[0]
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(self.max_rotation)
        shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * self.max_shift)
        scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * self.max_scale_change
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        ).to(images.device)
        out = torch.empty_like(images)
        for start in range(0, n, self.chunk_size):
            chunk = images[start : start + self.chunk_size].float()
            grid = F.affine_grid(theta[start : start + self.chunk_size], list(chunk.shape), align_corners=False)
            warped = F.grid_sample(chunk, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out[start : start + self.chunk_size] = warped.round_().clamp_(0, 255).to(torch.uint8)
        return out
