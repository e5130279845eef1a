#!/usr/bin/env python
"""Prototype of a learned segmentation for sprites on photos: trains a small dilated CNN on train-split sprites and
scores the default model with its silhouette on the suite's photo conditions.

Why: on a photo saved as JPEG the rule-based background removal keeps or loses about 12% of the sprite's pixels,
and no edge rule gets below 11% (docs/robustness.md, "Where the suite still loses"). A network that has seen
sprites knows better where the sprite ends. This script measures that, without touching the package: the network
reads the picture and the rule-based silhouette (``estimate_background``) and predicts the alpha; the silhouette
it gives replaces the found one on the same pixels, as in ``segmentation_gap.py``.

    python scripts/segmenter_prototype.py --steps 6000 --crop 96 --threads 2    # 20 min on 2 cores: 66.7%
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pokedex import reencode
from pokedex.background import _keep_blobs
from pokedex.data.archive import read_index
from pokedex.evaluation.conditions import condition_rng
from pokedex.evaluation.metrics import Evaluation
from pokedex.evaluation.suite import load_sprites, spread_subset
from pokedex.inference.loader import load_predictor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from segmentation_gap import found_silhouette, load_suite, with_alpha

PHOTO_CONDITIONS = ("busy_photo_jpeg", "busy_photo")  # conf/suite's sprites on an out-of-focus photo


class Segmenter(nn.Module):
    """3×3 convolutions with growing dilation (receptive field 33 px with the default), then a 1×1 to a logit."""

    def __init__(self, channels: int = 16, dilations: tuple[int, ...] = (1, 2, 4, 8, 1)) -> None:
        super().__init__()
        widths = [4, *[channels] * len(dilations)]  # 4 in: RGB and the rule-based silhouette
        layers = zip(widths[:-1], widths[1:], dilations, strict=True)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=d, dilation=d) for a, b, d in layers)
        self.out = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.out(x)[:, 0]


def inputs(pictures: np.ndarray, found: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 pictures and (N, H, W) bool rule-based silhouettes → (N, 4, H, W), centred on 0."""
    rgb = torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255
    return torch.cat([rgb, torch.from_numpy(found)[:, None].float()], 1) - 0.5


def composites(zip_path: str, split: str, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sprites of ``split`` on fresh photos (grain 0-8), three quarters as JPEG q40-95 (mostly 4:2:0)."""
    members = spread_subset(read_index(zip_path).split(split), count)
    rng = np.random.default_rng(seed)
    pictures, found, truth = [], [], []
    for sprite in load_sprites(zip_path, members):
        upload = reencode.composite(sprite, reencode.photo(sprite.size, rng, noise=float(rng.uniform(0, 8))))
        image: Image.Image = upload.convert("RGB")
        if rng.random() < 0.75:
            buffer = io.BytesIO()
            quality, subsampling = int(rng.integers(40, 96)), int(rng.choice([0, 2, 2, 2]))
            image.save(buffer, "JPEG", quality=quality, subsampling=subsampling)
            image = Image.open(buffer)
        rgb = image.convert("RGB")
        pictures.append(np.asarray(rgb)), found.append(found_silhouette(image, rgb))
        truth.append(np.asarray(sprite)[..., 3] > 0)
    return np.stack(pictures), np.stack(found), np.stack(truth)


def train(data: tuple[np.ndarray, ...], args: argparse.Namespace) -> Segmenter:
    pictures, found, truth = data
    net = Segmenter(args.channels)
    optimizer = torch.optim.AdamW(net.parameters(), args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.steps)
    rng, size, start = np.random.default_rng(0), args.crop, time.perf_counter()
    for step in range(args.steps):
        batch = rng.integers(0, len(pictures), args.batch_size)
        y, x = (int(v) for v in rng.integers(0, pictures.shape[1] - size + 1, 2))
        window = np.s_[y : y + size, x : x + size]
        xb = inputs(pictures[batch][:, window[0], window[1]], found[batch][:, window[0], window[1]])
        yb = torch.from_numpy(truth[batch][:, window[0], window[1]]).float()
        if rng.random() < 0.5:
            xb, yb = xb.flip(-1), yb.flip(-1)
        loss = F.binary_cross_entropy_with_logits(net(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 500 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.4f}, {time.perf_counter() - start:.0f} s", flush=True)
    return net.eval()


def score(net: Segmenter, args: argparse.Namespace) -> None:
    """Top-1 of the default model on the suite's photo conditions: rule-based silhouette against the network's."""
    suite = load_suite()
    conditions = {c.name: c for c in suite.conditions}
    predictor = load_predictor(args.model, threads=args.threads)
    size = predictor.spec.image_size
    members = spread_subset(read_index(args.zip).split("test"), args.test_images)
    sprites, labels = load_sprites(args.zip, members), np.array([m.label for m in members])
    print(f"| condition | rules | kept | lost | network | kept | lost | ({len(members)} test images)")
    for name in PHOTO_CONDITIONS:
        arrays: dict[str, list[np.ndarray]] = {"rules": [], "network": []}
        errors = {k: np.zeros(2) for k in arrays}
        sprite_pixels = 0
        for member, sprite in zip(members, sprites, strict=True):
            image = Image.open(io.BytesIO(conditions[name](sprite, condition_rng(suite.seed, name, member.path))))
            rgb = image.convert("RGB")
            rule, pixels = found_silhouette(image, rgb), np.array(rgb)  # a writable copy: torch warns on a view
            with torch.no_grad():
                learned = _keep_blobs(net(inputs(pixels[None], rule[None]))[0].numpy() > 0, share=0.05)  # as the rules
            true = np.asarray(sprite)[..., 3] > 0
            sprite_pixels += np.count_nonzero(true)
            for key, mask in (("rules", rule), ("network", learned)):
                errors[key] += (np.count_nonzero(mask & ~true), np.count_nonzero(true & ~mask))
                arrays[key].append(with_alpha(rgb, mask, size))
        cells = []
        for key, batch in arrays.items():
            top1 = Evaluation(predictor.predict_arrays(np.stack(batch)), labels).top_k(1)
            kept, lost = errors[key] / sprite_pixels
            cells += [f"{top1:.1%}", f"{kept:.1%}", f"{lost:.1%}"]
        print(f"| `{name}` | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", default="data/pokemon.zip")
    parser.add_argument("--model", default="models/model.onnx", help="the classifier to score with")
    parser.add_argument("--sprites", type=int, default=6000, help="train-split sprites to composite")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--crop", type=int, default=80, help="side of the training crops (px)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--save", help="write the trained weights here (a torch state dict)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    net = train(composites(args.zip, "train", args.sprites, seed=1), args)
    if args.save:
        torch.save(net.state_dict(), args.save)
    score(net, args)


if __name__ == "__main__":
    main()
