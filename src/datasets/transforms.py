"""Batched, seeded augmentation policies: per-sample parameters drawn once per draw, applied
to whole batches on any device.

A policy splits augmentation in two:

- ``draw(n, generator)``: the parameters of every training sample for one draw, as one
  small CPU tensor (row ``i`` belongs to sample ``i``), from a generator seeded by
  ``(seed, draw)``. Sample ``i``'s parameters are thus a function of (seed, draw, i).
- ``apply(images, params)``: transform uint8 images ``(B, C, H, W)`` with their rows of
  ``params``. Each output image depends only on its own input and parameters, never on
  the rest of the batch, so applying a draw to the whole set at once or batch by batch
  (as the memory-mapped path does) gives the same bytes.

Policies:

- ``affine``: a small random rotation, shift and scale, never a flip (a mirrored 2 is
  not a 2). The default for digits and clothes.
- ``crop-flip``: the standard CIFAR recipe: pad by an eighth of the side (4 pixels at
  32x32) with zeros, take a random crop of the original size, flip horizontally with
  probability 1/2. The default for natural images.
- ``none``: no augmentation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from ..errors import ConfigError


@dataclass(frozen=True)
class AffineAugmentation:
    """Random rotation (degrees), shift (fraction of the image side) and scale."""

    name = "affine"
    max_rotation: float = 10.0
    max_shift: float = 0.08
    max_scale_change: float = 0.08
    chunk_size: int = 2048  # small enough for the grid and the warp to stay in cache

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, **asdict(self)}

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """The ``(n, 2, 3)`` float32 warp matrices of one draw (``F.affine_grid``'s theta)."""
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(self.max_rotation)
        shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * self.max_shift)
        scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * self.max_scale_change
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        return torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)

    def apply(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Warp uint8 ``images`` with their matrices; returns a new uint8 tensor."""
        theta = params.to(images.device)
        out = torch.empty_like(images)
        height, width = images.shape[-2:]
        for start in range(0, images.shape[0], self.chunk_size):
            chunk = images[start : start + self.chunk_size].float()
            grid = affine_grid(theta[start : start + self.chunk_size], height, width)
            warped = F.grid_sample(chunk, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            # Bilinear weights are a convex combination of pixels in [0, 255], so no clamp:
            # +0.5 and truncation round to nearest.
            out[start : start + self.chunk_size] = warped.add_(0.5).to(torch.uint8)
        return out

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One draw for all of ``images``: ``apply(images, draw(len(images), generator))``."""
        return self.apply(images, self.draw(images.shape[0], generator))


@dataclass(frozen=True)
class CropFlipAugmentation:
    """Zero-pad by ``padding`` pixels (default: an eighth of the side, at least 1), take a
    random crop of the original size, and flip horizontally with probability 1/2."""

    name = "crop-flip"
    padding: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, **asdict(self)}

    def pad_for(self, height: int, width: int) -> int:
        return self.padding if self.padding is not None else max(1, round(min(height, width) / 8))

    def draw(self, n: int, generator: torch.Generator, height: int = 32, width: int = 32) -> torch.Tensor:
        """``(n, 3)`` int64 rows ``(top, left, flip)``: the crop's corner in the padded image."""
        pad = self.pad_for(height, width)
        corner = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
        flip = (torch.rand(n, generator=generator) < 0.5).long()
        return torch.cat([corner, flip[:, None]], 1)

    def apply(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Crop and flip uint8 ``images`` by their rows of ``params`` (pure indexing: exact)."""
        n, channels, height, width = images.shape
        pad = self.pad_for(height, width)
        params = params.to(images.device)
        padded = F.pad(images, (pad, pad, pad, pad))
        columns = torch.arange(width, device=images.device).expand(n, width)
        columns = torch.where(params[:, 2:3].bool(), columns.flip(1), columns) + params[:, 1:2]  # (n, W)
        rows = params[:, 0:1] + torch.arange(height, device=images.device)  # (n, H)
        # One gather of every output pixel from its flat position in the padded image
        # (9x faster on CPU than four broadcast index tensors).
        flat = (rows.unsqueeze(2) * (width + 2 * pad) + columns.unsqueeze(1)).view(n, 1, height * width)
        out = padded.view(n, channels, -1).gather(2, flat.expand(n, channels, height * width))
        return out.view(n, channels, height, width)


POLICIES = {"affine": AffineAugmentation, "crop-flip": CropFlipAugmentation, "none": None}


def check_policy(name: Any, owner: str = "augmentation") -> str:
    """``name`` when it names a policy.

    Raises:
        ConfigError: naming the value and the policies.
    """

    if not isinstance(name, str) or name not in POLICIES:
        raise ConfigError(f"Unknown augmentation policy {name!r} for {owner}; choose one of: {', '.join(POLICIES)}.")
    return name


def build_policy(name: str):
    """The policy object for ``name`` (``None`` for ``"none"``)."""
    factory = POLICIES[check_policy(name)]
    return factory() if factory is not None else None


class AugmentationDraw:
    """One draw of a policy for a training set of ``n`` images: a callable
    ``(images, index) -> images`` that transforms a batch of samples ``index``."""

    def __init__(self, policy, n: int, generator: torch.Generator, height: int, width: int):
        self.policy = policy
        if isinstance(policy, CropFlipAugmentation):
            self.params = policy.draw(n, generator, height, width)
        else:
            self.params = policy.draw(n, generator)
        self._device_params: Dict[torch.device, torch.Tensor] = {}

    def _params_on(self, device: torch.device) -> torch.Tensor:
        if device.type == "cpu":
            return self.params
        if device not in self._device_params:
            self._device_params = {device: self.params.to(device)}
        return self._device_params[device]

    def __call__(self, images: torch.Tensor, index: Optional[torch.Tensor] = None, start: int = 0) -> torch.Tensor:
        """Transform ``images``, the samples ``index`` (or ``start, start + 1, ...``)."""
        params = self._params_on(images.device)
        if index is None:
            rows = params[start : start + images.shape[0]]
        else:
            rows = params.index_select(0, index.to(params.device))
        return self.policy.apply(images, rows)


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, (N, C, height, width), align_corners=False)``, computed as two
    broadcast sums of per-row and per-column terms: 6x faster on CPU than the matmul
    torch uses, equal to it within float rounding."""
    xs = (torch.arange(width, dtype=theta.dtype, device=theta.device) * 2 + 1) / width - 1
    ys = (torch.arange(height, dtype=theta.dtype, device=theta.device) * 2 + 1) / height - 1
    grid = torch.empty(theta.shape[0], height, width, 2, dtype=theta.dtype, device=theta.device)
    for k in range(2):
        along_x = theta[:, k, 0:1] * xs
        along_y = theta[:, k, 1:2] * ys + theta[:, k, 2:3]
        torch.add(along_x.unsqueeze(1), along_y.unsqueeze(2), out=grid[..., k])
    return grid
