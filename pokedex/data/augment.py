"""Batch augmentation for RGBA sprites, run on whole batches on whatever device the batch is on.

Applied in ``PokedexDataModule.on_after_batch_transfer`` to uint8 batches from *any* loader (zip streaming or
the decoded cache), so both paths share one implementation and, on a GPU, the work happens on the GPU.
Hue is never touched: colour is what tells a Pikachu from a Raichu's shiny cousin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class BatchAugment:
    hflip_p: float = 0.5
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.08  # max shift as a fraction of the image size
    rotate_deg: float = 8.0
    brightness: float = 0.1  # multiplicative, RGB only, opaque pixels only
    contrast: float = 0.1

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 or [0, 1] float NCHW RGBA → augmented float NCHW in [0, 1]."""
        x = batch.float().div(255.0) if batch.dtype == torch.uint8 else batch.float()
        n, device = x.shape[0], x.device

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(n, device="cpu", generator=generator).mul_(high - low).add_(low).to(device)

        x = self._geometry(x, uniform)
        if self.brightness or self.contrast:
            x = self._colour(x, uniform)
        return x

    def _geometry(self, x: torch.Tensor, uniform) -> torch.Tensor:
        flip = torch.where(uniform(0.0, 1.0) < self.hflip_p, -1.0, 1.0)
        if self.scale == (1.0, 1.0) and not self.translate and not self.rotate_deg:
            return torch.where(flip.view(-1, 1, 1, 1) < 0, x.flip(-1), x)
        scale = uniform(*self.scale)
        angle = uniform(-self.rotate_deg, self.rotate_deg) * (math.pi / 180.0)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # affine_grid maps output coordinates to input coordinates: inverse scale, rotation, then flip.
        theta = torch.stack(
            [
                torch.stack([cos * flip, -sin, uniform(-self.translate, self.translate) * 2], dim=1),
                torch.stack([sin * flip, cos, uniform(-self.translate, self.translate) * 2], dim=1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _colour(self, x: torch.Tensor, uniform) -> torch.Tensor:
        rgb, alpha = x[:, :3], x[:, 3:]
        opaque = (alpha > 0).float()
        area = opaque.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
        mean = (rgb * opaque).sum(dim=(2, 3), keepdim=True) / area
        mean = mean.mean(dim=1, keepdim=True)  # luminance-like mean keeps hue intact
        b = uniform(1 - self.brightness, 1 + self.brightness).view(-1, 1, 1, 1)
        c = uniform(1 - self.contrast, 1 + self.contrast).view(-1, 1, 1, 1)
        rgb = ((rgb - mean) * c + mean) * b
        return torch.cat([rgb.clamp(0.0, 1.0) * opaque, alpha], dim=1)
