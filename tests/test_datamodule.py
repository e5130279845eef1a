"""The DataModule over a zip in the original project's layout: given splits, labels, RGBA tensors, workers."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pokedex.data.augment import BatchAugment
from pokedex.data.datamodule import PokedexDataModule
from pokedex.data.datasets import ZipImageDataset
from pokedex.data.sources.user_zip import ZipSource
from tests.helpers.images import png_bytes

CLASSES = {"Bulbasaur": (60, 180, 120), "Charmander": (240, 120, 40), "Squirtle": (80, 160, 230)}
COUNTS = {"train": 4, "val": 2, "test": 3}


@pytest.fixture(scope="module")
def original_layout_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("user") / "pokemon.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for split, count in COUNTS.items():
            for name, colour in CLASSES.items():
                for i in range(count):
                    zf.writestr(f"{split}/{name}/{i}.png", png_bytes(colour, size=128, square=40))
    return path


def _datamodule(user_zip: Path, tmp_path: Path, **kwargs) -> PokedexDataModule:
    source = ZipSource(path=str(user_zip), val_fraction=0.1, test_fraction=0.1, min_images_per_class=1)
    options = {"image_size": 64, "batch_size": 4, "num_workers": 0, **kwargs}
    return PokedexDataModule(zip_path=str(tmp_path / "prepared.zip"), source=source, **options)


def test_original_layout_yields_given_splits_and_labels(original_layout_zip: Path, tmp_path: Path) -> None:
    dm = _datamodule(original_layout_zip, tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.class_names == sorted(CLASSES)
    for split, count in COUNTS.items():
        images, labels = [], []
        loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
        for x, y in loader:
            images.append(x)
            labels.append(y)
        x, y = torch.cat(images), torch.cat(labels)
        expected = count * len(CLASSES) if split != "train" else (count * len(CLASSES) // 4) * 4  # drop_last
        assert len(y) == expected, split
        assert x.dtype == torch.uint8 and x.shape[1:] == (4, 64, 64)
        # the label of every image is its folder name: check through its colour
        for image, label in zip(x, y, strict=True):
            colour = tuple(int(c) for c in image[:3, 32, 32])
            expected_colour = CLASSES[dm.class_names[label]]
            assert np.allclose(colour, expected_colour, atol=3), (colour, expected_colour)
            assert image[3].min() == 255  # cropped to its content: the square fills the canvas


def test_loaders_work_with_worker_processes(original_layout_zip: Path, tmp_path: Path) -> None:
    dm = _datamodule(original_layout_zip, tmp_path, num_workers=2, persistent_workers=False)
    dm.prepare_data()
    seen = sum(len(y) for _, y in dm.val_dataloader())
    assert seen == COUNTS["val"] * len(CLASSES)


def test_dataset_pickles_without_its_zip_handle(original_layout_zip: Path, tmp_path: Path) -> None:
    dm = _datamodule(original_layout_zip, tmp_path)
    dm.prepare_data()
    dataset = dm.make_dataset("test")
    assert isinstance(dataset, ZipImageDataset)
    dataset[0]  # opens a handle in this process
    clone = pickle.loads(pickle.dumps(dataset))  # what spawn does to send it to a worker
    assert clone._zip._handle is None  # the handle did not travel; the clone opens its own
    assert torch.equal(clone[0][0], dataset[0][0])


def test_training_batches_are_augmented_on_transfer(original_layout_zip: Path, tmp_path: Path) -> None:
    dm = _datamodule(original_layout_zip, tmp_path, augment=BatchAugment())
    dm.prepare_data()
    batch = next(iter(dm.train_dataloader()))

    class _Trainer:
        training = True

    dm.trainer = _Trainer()  # type: ignore[assignment]
    images, labels = dm.on_after_batch_transfer(batch, 0)
    assert images.dtype == torch.float32 and images.shape == batch[0].shape and torch.equal(labels, batch[1])
    _Trainer.training = False
    assert dm.on_after_batch_transfer(batch, 0)[0] is batch[0]  # evaluation batches are untouched


def test_limit_classes_keeps_the_first_n(original_layout_zip: Path, tmp_path: Path) -> None:
    dm = _datamodule(original_layout_zip, tmp_path, limit_classes=2)
    dm.prepare_data()
    assert dm.class_names == sorted(CLASSES)[:2]
    assert {int(y) for _, y in dm.test_dataloader() for y in y} == {0, 1}


def test_per_process_handle_reopens_in_a_new_process(tmp_path: Path) -> None:
    import functools

    from pokedex.data.datasets import PerProcessHandle

    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    handle = PerProcessHandle(functools.partial(open, path, "rb"))
    first = handle.get()
    assert handle.get() is first  # one per process
    handle._pid = -1  # as seen from a forked child: the inherited handle belongs to another process
    assert handle.get() is not first and handle.get().read() == b"abc"
