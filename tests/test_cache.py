"""The decoded cache must hold exactly what streaming decodes, be built once, and never trust a bad file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pokedex.data.archive import read_index
from pokedex.data.cache import cache_key, ensure_cache
from pokedex.data.datamodule import PokedexDataModule
from pokedex.data.datasets import CachedDataset, ZipImageDataset, collate_batch
from pokedex.data.sources.synthetic import make_synthetic_zip

SIZE = 32


@pytest.fixture(scope="module")
def zip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "shapes.zip"
    make_synthetic_zip(path, num_classes=5, animations_per_class=4, frames_per_animation=3, image_size=SIZE)
    return path


def _streamed(zip_path: Path, size: int = SIZE) -> tuple[np.ndarray, list[int]]:
    members = [(m.path, m.label) for m in read_index(zip_path).members]
    dataset = ZipImageDataset(zip_path, members, size)
    return np.stack([dataset[i][0].numpy() for i in range(len(dataset))]), [label for _, label in members]


def test_cache_equals_streaming_exactly(zip_path: Path, tmp_path: Path) -> None:
    cache = ensure_cache(zip_path, tmp_path, SIZE, workers=0)
    expected, labels = _streamed(zip_path)
    array = np.load(cache.path, mmap_mode="r")
    assert array.dtype == np.uint8 and array.shape == expected.shape
    np.testing.assert_array_equal(np.asarray(array), expected)

    members = [(m.path, m.label) for m in read_index(zip_path).members]
    dataset = cache.dataset(members)
    images, got_labels = dataset.__getitems__([3, 0, 7])
    np.testing.assert_array_equal(images.numpy(), expected[[3, 0, 7]])
    assert got_labels.tolist() == [labels[3], labels[0], labels[7]]
    single, label = dataset[5]
    np.testing.assert_array_equal(single.numpy(), expected[5])
    assert label == labels[5]


def test_cache_is_atomic_and_reused(zip_path: Path, tmp_path: Path) -> None:
    first = ensure_cache(zip_path, tmp_path, SIZE, workers=0)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    mtime = first.path.stat().st_mtime_ns
    meta_mtime = first.path.with_suffix(".json").stat().st_mtime_ns
    second = ensure_cache(zip_path, tmp_path, SIZE, workers=0)
    assert second.path == first.path
    assert second.path.stat().st_mtime_ns == mtime  # not rebuilt
    assert second.path.with_suffix(".json").stat().st_mtime_ns == meta_mtime


def test_key_changes_with_image_size_and_zip(zip_path: Path, tmp_path: Path) -> None:
    a = ensure_cache(zip_path, tmp_path, SIZE, workers=0)
    b = ensure_cache(zip_path, tmp_path, SIZE // 2, workers=0)
    assert a.key != b.key and a.path != b.path
    assert np.load(b.path, mmap_mode="r").shape[-1] == SIZE // 2
    assert cache_key("ab" * 32, 64) != cache_key("cd" * 32, 64)

    other = tmp_path / "other.zip"
    make_synthetic_zip(other, num_classes=5, animations_per_class=4, frames_per_animation=3, image_size=SIZE, seed=1)
    assert ensure_cache(other, tmp_path, SIZE, workers=0).key != a.key


@pytest.mark.parametrize("damage", ["truncate", "flip_payload", "garbage_header", "drop_meta", "meta_mismatch"])
def test_damaged_cache_is_rebuilt_not_trusted(zip_path: Path, tmp_path: Path, damage: str) -> None:
    good = ensure_cache(zip_path, tmp_path, SIZE, workers=0)
    reference = np.load(good.path).copy()
    raw = good.path.read_bytes()
    meta_path = good.path.with_suffix(".json")
    if damage == "truncate":
        good.path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip_payload":
        corrupt = bytearray(raw)
        corrupt[-100] ^= 0xFF
        good.path.write_bytes(bytes(corrupt))
    elif damage == "garbage_header":
        good.path.write_bytes(b"\x00" * 64 + raw[64:])
    elif damage == "drop_meta":
        meta_path.unlink()
    else:
        meta = json.loads(meta_path.read_text())
        meta["image_size"] = SIZE * 2
        meta_path.write_text(json.dumps(meta))

    rebuilt = ensure_cache(zip_path, tmp_path, SIZE, workers=0)
    np.testing.assert_array_equal(np.load(rebuilt.path), reference)
    assert json.loads(meta_path.read_text())["image_size"] == SIZE


def test_cached_loader_with_two_workers(zip_path: Path, tmp_path: Path) -> None:
    cache = ensure_cache(zip_path, tmp_path, SIZE, workers=2)  # parallel build too
    expected, labels = _streamed(zip_path)
    members = [(m.path, m.label) for m in read_index(zip_path).members]
    dataset = cache.dataset(members)
    loader = DataLoader(dataset, batch_size=4, shuffle=False, num_workers=2, collate_fn=collate_batch)
    images, got = zip(*loader, strict=True)
    np.testing.assert_array_equal(torch.cat(images).numpy(), expected)
    assert torch.cat(got).tolist() == labels


def test_cached_dataset_pickles_without_its_file_handle(zip_path: Path, tmp_path: Path) -> None:
    import pickle

    cache = ensure_cache(zip_path, tmp_path, SIZE, workers=0)
    dataset = CachedDataset(cache.path, [0, 1], [0, 0])
    dataset[0]  # opens the file
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._file._handle is None  # the descriptor did not travel; the clone opens its own
    np.testing.assert_array_equal(clone[1][0].numpy(), dataset[1][0].numpy())
    with pytest.raises(IndexError):
        CachedDataset(cache.path, [0, 10_000], [0, 0])


def test_datamodule_cache_matches_streaming(zip_path: Path, tmp_path: Path) -> None:
    def batches(cache: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        dm = PokedexDataModule(
            str(zip_path), image_size=SIZE, batch_size=4, num_workers=0, cache=cache, cache_dir=str(tmp_path)
        )
        dm.prepare_data()
        return list(dm.val_dataloader())

    cached, streamed = batches(True), batches(False)
    assert len(cached) == len(streamed)
    for (ci, cl), (si, sl) in zip(cached, streamed, strict=True):
        assert ci.dtype == si.dtype == torch.uint8
        torch.testing.assert_close(ci, si, rtol=0, atol=0)
        assert cl.tolist() == sl.tolist()


def test_datamodule_cache_respects_limit_classes(zip_path: Path, tmp_path: Path) -> None:
    dm = PokedexDataModule(str(zip_path), image_size=SIZE, batch_size=4, num_workers=0, cache=True, limit_classes=2)
    dm.cache_dir = tmp_path
    dm.setup()
    assert isinstance(dm.datasets["train"], CachedDataset)
    labels = torch.cat([labels for _, labels in dm.train_dataloader()])
    assert set(labels.tolist()) <= {0, 1}


def test_stale_cache_of_a_rebuilt_zip_is_pruned(tmp_path: Path) -> None:
    kwargs = {"num_classes": 3, "animations_per_class": 3, "frames_per_animation": 2, "image_size": SIZE}
    path, other = tmp_path / "a.zip", tmp_path / "b.zip"
    make_synthetic_zip(path, seed=0, **kwargs)
    make_synthetic_zip(other, seed=0, **kwargs)
    old = ensure_cache(path, tmp_path / "cache", SIZE, workers=0)
    kept = ensure_cache(other, tmp_path / "cache", SIZE, workers=0)
    make_synthetic_zip(path, seed=1, **kwargs)  # the same file rebuilt with other content
    new = ensure_cache(path, tmp_path / "cache", SIZE, workers=0)
    assert new.path != old.path and new.path.exists()
    assert not old.path.exists() and not old.path.with_suffix(".json").exists()
    assert kept.path.exists()


@pytest.mark.parametrize("workers", [0, 1])
def test_building_leaves_the_global_rng_alone(zip_path: Path, tmp_path: Path, workers: int) -> None:
    """A seeded run must train the same whether or not it had to build the cache first."""
    state = torch.get_rng_state()
    ensure_cache(zip_path, tmp_path, SIZE, workers=workers)
    assert torch.equal(torch.get_rng_state(), state)


def test_cache_key_follows_the_preprocessing_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """New preprocessing means new pixels: an old cache must be rebuilt, never read."""
    from pokedex.data import cache

    before = cache_key("ab" * 32, 64)
    monkeypatch.setattr(cache, "PREPROCESS_VERSION", cache.PREPROCESS_VERSION + 1)
    assert cache_key("ab" * 32, 64) != before
