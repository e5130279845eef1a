"""Batch augmentation for RGBA sprites, run on whole batches on whatever device the batch is on.

Applied in ``PokedexDataModule.on_after_batch_transfer`` to uint8 batches from *any* loader (zip streaming or
the decoded cache), so both paths share one implementation and, on a GPU, the work happens on the GPU.

Besides geometry and brightness/contrast, it teaches what real uploads look like (docs/robustness.md): sprites
``degrade``d like thumbnails and JPEGs (blur, down-then-up sampling, noise) and composited onto an opaque
``background`` (a solid colour, a gradient, noise, or another sprite of the batch) with the alpha channel
dropped: the pictures whose background the preprocessing cannot remove. Hue is never touched: colour is what
tells a Pikachu from a Raichu's shiny cousin.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Uniform = Callable[[float, float], torch.Tensor]
BACKGROUNDS = ("solid", "gradient", "noise", "other")


@dataclass
class BatchAugment:
    hflip_p: float = 0.5
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.08  # max shift as a fraction of the image size
    rotate_deg: float = 8.0
    brightness: float = 0.1  # multiplicative, RGB only, opaque pixels only
    contrast: float = 0.1
    degrade_p: float = 0.0  # fraction of the batch blurred / resampled / noised (before any background)
    background_p: float = 0.0  # fraction composited onto an opaque background, alpha dropped
    backgrounds: tuple[str, ...] = BACKGROUNDS
    background_scale: tuple[float, float] = (1.0, 1.0)  # sprite size within the picture (a photo shows it small)

    def __post_init__(self) -> None:
        unknown = set(self.backgrounds) - set(BACKGROUNDS)
        if unknown or not self.backgrounds:
            raise ValueError(f"data.augment.backgrounds: choose from {BACKGROUNDS}, got {list(self.backgrounds)}")

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 or [0, 1] float NCHW RGBA → augmented float NCHW in [0, 1]."""
        x = batch.float().div(255.0) if batch.dtype == torch.uint8 else batch.float()
        n, device = x.shape[0], x.device

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(n, device="cpu", generator=generator).mul_(high - low).add_(low).to(device)

        x = self._geometry(x, uniform)
        if self.brightness or self.contrast:
            x = self._colour(x, uniform)
        if self.degrade_p:
            x = self._degrade(x, uniform, generator)
        if self.background_p:
            x = self._background(x, uniform, generator)
        return x

    def _geometry(self, x: torch.Tensor, uniform: Uniform) -> torch.Tensor:
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

    def _colour(self, x: torch.Tensor, uniform: Uniform) -> torch.Tensor:
        rgb, alpha = x[:, :3], x[:, 3:]
        opaque = (alpha > 0).float()
        area = opaque.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
        mean = (rgb * opaque).sum(dim=(2, 3), keepdim=True) / area
        mean = mean.mean(dim=1, keepdim=True)  # luminance-like mean keeps hue intact
        b = uniform(1 - self.brightness, 1 + self.brightness).view(-1, 1, 1, 1)
        c = uniform(1 - self.contrast, 1 + self.contrast).view(-1, 1, 1, 1)
        rgb = ((rgb - mean) * c + mean) * b
        return torch.cat([rgb.clamp(0.0, 1.0) * opaque, alpha], dim=1)

    @staticmethod
    def _chosen(uniform: Uniform, p: float) -> torch.Tensor:
        """Indices of the samples that get an augmentation of probability ``p`` (work is done on those only)."""
        return torch.nonzero(uniform(0.0, 1.0) < p).flatten()

    def _degrade(self, x: torch.Tensor, uniform: Uniform, generator: torch.Generator | None) -> torch.Tensor:
        """A thumbnail blown up or an out-of-focus copy: down-then-up sampling by 1/3..0.9 (premultiplied, so
        edges soften into transparency as a real blur does) and mild noise on the colours."""
        chosen = self._chosen(uniform, self.degrade_p)
        factor = float(uniform(1 / 3, 0.9)[0])  # one factor per batch: interpolate takes one output size
        if not len(chosen):
            return x
        sub, size = x[chosen], x.shape[-1]
        alpha = sub[:, 3:]
        premultiplied = torch.cat([sub[:, :3] * alpha, alpha], dim=1)
        small = F.interpolate(premultiplied, size=max(4, round(size * factor)), mode="area")
        soft = F.interpolate(small, size=size, mode="bilinear")
        soft_alpha = soft[:, 3:].clamp(0.0, 1.0)
        noise = torch.randn(sub[:, :3].shape, generator=generator).to(x.device) * 0.02
        rgb = (soft[:, :3] / soft_alpha.clamp_min(1e-3) + noise).clamp(0.0, 1.0) * (soft_alpha > 0)
        out = x.clone()
        out[chosen] = torch.cat([rgb, soft_alpha], dim=1)
        return out

    def _background(self, x: torch.Tensor, uniform: Uniform, generator: torch.Generator | None) -> torch.Tensor:
        """Composite onto an opaque background of a random kind and drop the alpha channel (alpha = 1)."""
        chosen = self._chosen(uniform, self.background_p)
        if not len(chosen):
            return x
        n, (_, _, height, width) = len(chosen), x.shape
        kinds = torch.tensor([BACKGROUNDS.index(k) for k in self.backgrounds])
        pick = kinds[torch.randint(len(kinds), (n,), generator=generator)]
        start, end = (torch.rand(n, 3, 1, 1, generator=generator).to(x.device) for _ in range(2))
        background = start.expand(n, 3, height, width).clone()  # "solid"
        for kind, rows in ((k, torch.nonzero(pick == k).flatten()) for k in kinds.tolist()):
            if len(rows) and BACKGROUNDS[kind] != "solid":
                background[rows] = self._pattern(BACKGROUNDS[kind], x, chosen[rows], start[rows], end[rows], generator)
        sprites = self._shrink(x[chosen], generator)
        alpha = sprites[:, 3:]
        flat = sprites[:, :3] * alpha + background * (1 - alpha)
        out = x.clone()
        out[chosen] = torch.cat([flat, torch.ones_like(alpha)], dim=1)
        return out

    def _shrink(self, sprites: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Scale each sprite by ``background_scale`` and place it anywhere it fits: in an opaque picture the
        preprocessing cannot crop, the sprite is usually small and off-centre."""
        low, high = self.background_scale
        if (low, high) == (1.0, 1.0):
            return sprites
        n = len(sprites)
        scale = torch.rand(n, generator=generator).mul_(high - low).add_(low)
        shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - scale).unsqueeze(1)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
        theta[:, :, 2] = -shift / scale.unsqueeze(1)
        grid = F.affine_grid(theta.to(sprites.device), list(sprites.shape), align_corners=False)
        return F.grid_sample(sprites, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    @staticmethod
    def _pattern(
        kind: str, x: torch.Tensor, rows: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:  # fmt: skip
        """A gradient (horizontal or vertical) with grain, colour noise from smooth blobs to per-pixel static, or
        another sprite of the batch on a colour. Photos and textures are busy at every scale, so both patterns
        carry fine, per-pixel variation of a random strength too."""
        n, height, width = len(rows), x.shape[-2], x.shape[-1]

        def fine(strength: float) -> tuple[torch.Tensor, torch.Tensor]:
            """(per-pixel noise in [0, 1], its weight per sample, uniform in [0, strength])."""
            pixels = torch.rand(n, 3, height, width, generator=generator).to(x.device)
            return pixels, (torch.rand(n, 1, 1, 1, generator=generator) * strength).to(x.device)

        if kind == "gradient":
            ramp = torch.linspace(0.0, 1.0, width, device=x.device).view(1, 1, 1, width).expand(n, 1, height, width)
            vertical = (torch.rand(n, generator=generator) < 0.5).to(x.device).view(-1, 1, 1, 1)
            ramp = torch.where(vertical, ramp.transpose(-1, -2), ramp)
            pixels, weight = fine(0.3)
            return torch.lerp(start + (end - start) * ramp, pixels, weight)
        if kind == "noise":
            coarse = torch.rand(n, 3, max(2, height // 8), max(2, width // 8), generator=generator).to(x.device)
            pixels, weight = fine(1.0)
            return torch.lerp(F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False),
                              pixels, weight)  # fmt: skip
        other = x[(rows + 1) % x.shape[0]]
        return other[:, :3] * other[:, 3:] + start * (1 - other[:, 3:])
