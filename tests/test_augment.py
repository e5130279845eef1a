"""Batch augmentation: shape and range kept, transparency respected, flips exact, hue untouched, and the same
result whichever loader (zip streaming or decoded cache) produced the batch."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pokedex.data.augment import BatchAugment
from pokedex.data.datamodule import PokedexDataModule
from pokedex.data.sources.synthetic import make_synthetic_zip

SIZE = 32
NO_GEOMETRY = {"hflip_p": 0.0, "scale": (1.0, 1.0), "translate": 0.0, "rotate_deg": 0.0}


def _sprites(n: int = 8, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """Random uint8 RGBA sprites: an opaque blob on a transparent canvas, RGB zeroed where alpha is 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 4, size, size), dtype=torch.uint8, generator=g)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    radius = torch.randint(size // 6, size // 2, (n, 1, 1), generator=g)
    inside = ((yy - size // 2) ** 2 + (xx - size // 3) ** 2) < radius**2
    x[:, 3] = torch.where(inside, x[:, 3].clamp_min(1), 0)
    x[:, :3] *= (x[:, 3:] > 0).to(torch.uint8)
    return x


def _hue(rgb: torch.Tensor) -> torch.Tensor:
    """HSV hue in [0, 6) of an (..., 3) tensor."""
    r, g, b = rgb.unbind(-1)
    top, bottom = rgb.max(-1).values, rgb.min(-1).values
    span = (top - bottom).clamp_min(1e-12)
    hue = torch.where(top == r, ((g - b) / span) % 6, torch.where(top == g, (b - r) / span + 2, (r - g) / span + 4))
    return hue


def test_keeps_shape_dtype_and_range() -> None:
    x = _sprites()
    out = BatchAugment(brightness=0.3, contrast=0.3)(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_uint8_and_unit_float_inputs_agree() -> None:
    x = _sprites()
    a = BatchAugment()(x, generator=torch.Generator().manual_seed(3))
    b = BatchAugment()(x.float() / 255.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("geometry", [True, False])
def test_transparent_pixels_have_zero_rgb(geometry: bool) -> None:
    augment = BatchAugment(brightness=0.3, contrast=0.3) if geometry else BatchAugment(**NO_GEOMETRY)
    out = augment(_sprites(16), generator=torch.Generator().manual_seed(1))
    transparent = out[:, 3:] == 0
    assert transparent.any()
    assert (out[:, :3] * transparent).abs().max() == 0


def test_flips_are_exact() -> None:
    x = _sprites()
    always = BatchAugment(**{**NO_GEOMETRY, "hflip_p": 1.0}, brightness=0.0, contrast=0.0)
    never = BatchAugment(**NO_GEOMETRY, brightness=0.0, contrast=0.0)
    assert torch.equal(always(x), x.flip(-1).float() / 255.0)
    assert torch.equal(never(x), x.float() / 255.0)


def test_affine_path_mirror_matches_flip() -> None:
    """A flip through the affine sampler (identity scale, no shift or rotation) lands on pixel centres."""
    x = _sprites()
    augment = BatchAugment(hflip_p=1.0, scale=(1.0, 1.0), translate=0.0, rotate_deg=1e-9, brightness=0, contrast=0)
    torch.testing.assert_close(augment(x), x.flip(-1).float() / 255.0, atol=1e-5, rtol=0)


def test_colour_jitter_keeps_hue_and_alpha_of_a_pure_colour_sprite() -> None:
    x = torch.zeros(16, 4, SIZE, SIZE, dtype=torch.uint8)
    x[:, :3, 8:24, 6:26] = torch.tensor([150, 100, 60], dtype=torch.uint8).view(3, 1, 1)
    x[:, 3, 8:24, 6:26] = 255
    out = BatchAugment(**NO_GEOMETRY, brightness=0.3, contrast=0.3)(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 3], x[:, 3].float() / 255.0)  # alpha untouched
    rgb_in = (x[:, :3].float() / 255.0).permute(0, 2, 3, 1)[x[:, 3] > 0]
    rgb_out = out[:, :3].permute(0, 2, 3, 1)[x[:, 3] > 0]
    unclamped = ((rgb_out > 0) & (rgb_out < 1)).all(-1)
    assert unclamped.float().mean() > 0.9  # the check below covers almost every pixel
    torch.testing.assert_close(_hue(rgb_out[unclamped]), _hue(rgb_in[unclamped]), atol=1e-4, rtol=0)
    assert not torch.equal(rgb_out, rgb_in)  # it did jitter


def test_brightness_keeps_rgb_ratio() -> None:
    x = torch.zeros(8, 4, SIZE, SIZE, dtype=torch.uint8)
    x[:, :3, 4:28, 4:28] = torch.tensor([120, 80, 40], dtype=torch.uint8).view(3, 1, 1)
    x[:, 3, 4:28, 4:28] = 255
    out = BatchAugment(**NO_GEOMETRY, brightness=0.3, contrast=0.0)(x, generator=torch.Generator().manual_seed(0))
    rgb = out[:, :3, 4:28, 4:28]
    torch.testing.assert_close(rgb[:, 0] / rgb[:, 2], torch.full_like(rgb[:, 0], 3.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(rgb[:, 1] / rgb[:, 2], torch.full_like(rgb[:, 0], 2.0), atol=1e-5, rtol=0)


def test_same_semantics_for_cache_and_streaming(tmp_path: Path) -> None:
    zip_path = tmp_path / "shapes.zip"
    make_synthetic_zip(zip_path, num_classes=4, animations_per_class=4, frames_per_animation=4, image_size=SIZE)

    def augmented(cache: bool) -> list[torch.Tensor]:
        dm = PokedexDataModule(
            str(zip_path),
            image_size=SIZE,
            batch_size=8,
            num_workers=0,
            augment=BatchAugment(),
            cache=cache,
            cache_dir=str(tmp_path / "cache"),
        )
        dm.trainer = SimpleNamespace(training=True)  # on_after_batch_transfer augments only while training
        out = []
        for i, batch in enumerate(dm.val_dataloader()):
            torch.manual_seed(100 + i)
            out.append(dm.on_after_batch_transfer(batch, 0)[0])
        return out

    cached, streamed = augmented(True), augmented(False)
    assert len(cached) == len(streamed) > 1
    for a, b in zip(cached, streamed, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["solid", "gradient", "noise", "other"])
def test_background_makes_every_pixel_opaque_and_keeps_the_sprite(kind: str) -> None:
    x = _sprites(8)
    out = BatchAugment(**NO_GEOMETRY, brightness=0, contrast=0, background_p=1.0, backgrounds=(kind,))(
        x, generator=torch.Generator().manual_seed(0)
    )
    assert torch.all(out[:, 3] == 1.0)  # alpha dropped: an opaque picture, as a screenshot is
    solid = x[:, 3:] == 255
    torch.testing.assert_close(out[:, :3] * solid, x[:, :3].float() / 255 * solid)  # the sprite itself untouched
    background = (x[:, 3:] == 0).expand(-1, 3, -1, -1)
    assert out[:, :3][background].std() > 0.05  # transparent pixels got a background, not all black


@pytest.mark.parametrize("kind", ["gradient", "noise"])
def test_busy_backgrounds_have_grain_of_varying_strength(kind: str) -> None:
    """Busy pictures are busy at every scale: some backgrounds carry strong per-pixel variation, some little."""
    x = torch.zeros(64, 4, SIZE, SIZE, dtype=torch.uint8)  # nothing but background
    out = BatchAugment(**NO_GEOMETRY, brightness=0, contrast=0, background_p=1.0, backgrounds=(kind,))(
        x, generator=torch.Generator().manual_seed(0)
    )
    grain = (out[:, :3, :, 1:] - out[:, :3, :, :-1]).abs().mean(dim=(1, 2, 3))  # neighbour differences
    assert grain.max() > 4 * grain.min()
    assert grain.max() > (0.07 if kind == "gradient" else 0.2)  # static: E|u - v| = 1/3 at full strength


def test_background_fraction_and_determinism() -> None:
    x = _sprites(64)
    augment = BatchAugment(**NO_GEOMETRY, brightness=0, contrast=0, background_p=0.5)
    a, b = (augment(x, generator=torch.Generator().manual_seed(7)) for _ in range(2))
    torch.testing.assert_close(a, b)
    opaque = (a[:, 3] == 1.0).flatten(1).all(dim=1).float().mean()
    assert 0.3 < opaque < 0.7
    with pytest.raises(ValueError, match="backgrounds"):
        BatchAugment(backgrounds=("photo",))


def test_degrade_softens_edges_but_keeps_range() -> None:
    x = _sprites(8)
    out = BatchAugment(**NO_GEOMETRY, brightness=0, contrast=0, degrade_p=1.0)(
        x, generator=torch.Generator().manual_seed(0)
    )
    assert out.min() >= 0 and out.max() <= 1
    alpha = out[:, 3]
    assert ((alpha > 0) & (alpha < 1)).any()  # soft edges, as a blurred or resampled upload has
    assert torch.all(out[:, :3] * (alpha == 0).unsqueeze(1) == 0)  # still no colour hidden under alpha 0


def test_background_scale_shrinks_the_sprite_inside_the_picture() -> None:
    x = torch.zeros(16, 4, SIZE, SIZE, dtype=torch.uint8)
    x[:, :, 2:-2, 2:-2] = 255  # a sprite that nearly fills the canvas
    augment = BatchAugment(**NO_GEOMETRY, brightness=0, contrast=0, background_p=1.0, backgrounds=("solid",))
    small = BatchAugment(**{**augment.__dict__, "background_scale": (0.4, 0.5)})
    white = lambda out: (out[:, :3] == 1.0).all(dim=1).float().mean(dim=(1, 2))  # noqa: E731
    full = white(augment(x, generator=torch.Generator().manual_seed(0)))
    shrunk = white(small(x, generator=torch.Generator().manual_seed(0)))
    assert torch.all(full > 0.7) and torch.all(shrunk < 0.3)  # the sprite's share of the picture: ~s²
