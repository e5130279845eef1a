"""Smooth (photo-like) backgrounds: removed up to the content's outline, at analysis size and refined at full size,
with the content's inside kept where the sprite touches the border; a picture busy at every scale is kept whole."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pokedex.preprocess import InputFacts, image_to_array, image_to_canonical
from pokedex.reencode import on_photo, photo
from tests.helpers.images import alpha_iou, encode, flatten, foreground_diff, make_sprite


@pytest.mark.parametrize(
    ("side", "fmt", "overlap", "diff"),
    [(96, "PNG", 0.95, 2), (96, "JPEG", 0.9, 16),  # JPEG bleeds the photo's colours into a small sprite's edge
     # 512: analysed on a 4× box-averaged copy, then refined per pixel; where the photo is as dark as the
     # outline, some outline goes with it
     (512, "PNG", 0.9, 10), (512, "JPEG", 0.9, 10)],
)  # fmt: skip
def test_a_smooth_background_is_removed_up_to_the_outline(side: int, fmt: str, overlap: float, diff: float) -> None:
    sprite = make_sprite().resize((side // 2, side // 2), Image.Resampling.NEAREST)
    clean = image_to_array(sprite, 48)
    for seed in range(3):
        upload = on_photo(sprite, 2.0, np.random.default_rng(seed))
        array, facts = image_to_canonical(Image.open(io.BytesIO(encode(upload, fmt, quality=90))), 48)
        assert facts.background == "smooth" and facts.background_colour is None and not facts.had_transparency
        assert alpha_iou(array, clean) > overlap and foreground_diff(array, clean) < diff, seed


def test_a_sprite_touching_the_border_keeps_its_inside() -> None:
    """Regions that touch the border only briefly (the outline where the sprite reaches the picture's edge) are
    not background, however smooth: the body inside the outline stays."""
    sprite = make_sprite().crop((0, 8, 64, 59))  # the outline touches the top and bottom edges
    clean = image_to_array(sprite, 48)
    background = photo(sprite.size, np.random.default_rng(0))
    upload = Image.alpha_composite(background.convert("RGBA"), sprite).convert("RGB")
    array, facts = image_to_canonical(upload, 48)
    assert facts.background == "smooth" and alpha_iou(array, clean) > 0.9


def test_a_photo_around_a_pasted_screenshot_goes_and_the_screenshot_stays() -> None:
    """A sprite on white pasted into a photo: the photo is removed, the white screenshot is the content."""
    screenshot = flatten(make_sprite(), (255, 255, 255))  # 64×64, opaque
    picture = photo((300, 200), np.random.default_rng(0))
    picture.paste(screenshot, (40, 40))
    array, facts = image_to_canonical(picture, 48)
    assert facts.background == "smooth" and 0.06 < facts.foreground_fraction < 0.08  # 64² of 300×200: 0.068
    assert (array[3] == 255).mean() > 0.99  # the square screenshot fills the canvas


def test_a_picture_busy_at_every_scale_is_kept_whole() -> None:
    """No smooth border (a mosaic of 2-px tiles: every pixel next to a step) and no per-pixel texture: nothing
    can be told apart from the content, so the picture is kept opaque, as a whole."""
    tiles = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    mosaic = Image.fromarray(tiles.repeat(2, axis=0).repeat(2, axis=1))
    array, facts = image_to_canonical(mosaic, 40)
    assert facts == InputFacts(had_transparency=False, background="none", foreground_fraction=1.0)
    assert (array[3, 5:35] == 255).all()
