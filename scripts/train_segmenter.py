#!/usr/bin/env python
"""Train the learned segmentation that the preprocessing runs on pictures of a sprite on a photo
(``pokedex/segmenter.py``), and export it as the ONNX file the package ships.

Why: on a photo saved as JPEG the rule-based background removal keeps or loses about 12% of the sprite's pixels,
and no edge rule gets below 11% (docs/robustness.md, "Where the suite still loses"). A network that has seen
sprites knows better where the sprite ends. It reads the picture and the rules' silhouette (``estimate_background``
with ``learned=False``) and predicts the alpha. Train-split sprites only, on fresh photos, three quarters of them
saved as JPEG; deterministic (seeded data, one torch seed), so a rerun gives the same weights.

    python scripts/train_segmenter.py --out pokedex/assets/segmenter.onnx --force   # ~43 min on 2 cores

New weights change the preprocessing's output: put the printed sha256 in ``pokedex.segmenter.SEGMENTER_SHA256``,
bump ``PREPROCESS_VERSION`` and retrain (``make repro``); score with ``segmentation_gap.py`` and the suite.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pokedex import reencode
from pokedex.data.archive import read_index
from pokedex.evaluation.suite import load_sprites, spread_subset
from pokedex.io import write_bytes_atomic
from pokedex.segmenter import INPUT_NAME, OUTPUT_NAME, network_input

sys.path.insert(0, str(Path(__file__).resolve().parent))

from segmentation_gap import found_silhouette


class Segmenter(nn.Module):
    """Two scales: 3×3 convolutions at full resolution see the outline, dilated ones at half resolution see
    the context (receptive field about 70 px: most of a 128 px sprite); a 3×3 convolution joins the two. Four
    inputs: RGB and the rules' silhouette."""

    def __init__(self, channels: int = 16, coarse: int = 24, dilations: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        super().__init__()
        self.fine = nn.ModuleList([nn.Conv2d(4, channels, 3, padding=1), nn.Conv2d(channels, channels, 3, padding=1)])
        self.down = nn.Conv2d(channels, coarse, 3, stride=2, padding=1)
        self.context = nn.ModuleList(nn.Conv2d(coarse, coarse, 3, padding=d, dilation=d) for d in dilations)
        self.join = nn.Conv2d(channels + coarse, channels, 3, padding=1)
        self.out = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        for conv in self.fine:
            x = F.relu(conv(x))
        context = F.relu(self.down(x))
        for conv in self.context:
            context = F.relu(conv(context))
        context = F.interpolate(context, scale_factor=2.0, mode="nearest")[..., :height, :width]  # odd sizes too
        return self.out(F.relu(self.join(torch.cat([x, context], 1))))[:, 0]


def inputs(pictures: np.ndarray, found: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 pictures and (N, H, W) bool rule-based silhouettes → (N, 4, H, W): the package's own
    ``network_input`` per picture, so training and use cannot drift apart."""
    batch = [network_input(np.moveaxis(p, -1, 0), f) for p, f in zip(pictures, found, strict=True)]
    return torch.from_numpy(np.stack(batch))


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
        pictures.append(np.asarray(rgb)), found.append(found_silhouette(image, rgb, learned=False))
        truth.append(np.asarray(sprite)[..., 3] > 0)
    return np.stack(pictures), np.stack(found), np.stack(truth)


def train(data: tuple[np.ndarray, ...], args: argparse.Namespace) -> Segmenter:
    pictures, found, truth = data
    net = Segmenter(args.channels, args.coarse)
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


def to_onnx(net: Segmenter) -> bytes:
    """The network as ONNX, any picture size (the convolutions are padded: the output has the input's size)."""
    buffer, axes = io.BytesIO(), {2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter deprecation chatter
        torch.onnx.export(
            net,
            (torch.zeros(1, 4, 64, 64),),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: {1: "height", 2: "width"}},
        )
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the ONNX file to write (pokedex/assets/segmenter.onnx ships)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--zip", default="data/pokemon.zip")
    parser.add_argument("--sprites", type=int, default=6000, help="train-split sprites to composite")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--crop", type=int, default=96, help="side of the training crops (px)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=16, help="full-resolution channels")
    parser.add_argument("--coarse", type=int, default=24, help="half-resolution channels")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", help="also write the weights here (a torch state dict)")
    args = parser.parse_args()
    if Path(args.out).exists() and not args.force:
        raise SystemExit(
            f"{args.out} exists: pass --force to replace it (the shipped weights are part of the "
            "preprocessing; see this script's docstring)"
        )
    if not Path(args.zip).is_file():
        raise SystemExit(f"{args.zip} not found: the segmenter trains on its train split (make data builds it)")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    net = train(composites(args.zip, "train", args.sprites, seed=1), args)
    if args.save:
        torch.save(net.state_dict(), args.save)
    data = to_onnx(net)
    write_bytes_atomic(args.out, data)
    print(f"wrote {args.out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
