"""The LightningDataModule: datasets over the dataset zip, loaders, and batch augmentation on the device."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from pokedex.data.archive import DatasetError, DatasetIndex, read_index
from pokedex.data.augment import BatchAugment
from pokedex.data.cache import DecodedCache, ensure_cache
from pokedex.data.datasets import ZipImageDataset
from pokedex.data.reupload import Reupload, ReuploadDataset
from pokedex.data.sources import DataSource, ensure_dataset

log = logging.getLogger(__name__)


class PokedexDataModule(L.LightningDataModule):
    """Builds the dataset zip if needed (``prepare_data``), then serves uint8 batches.

    ``path`` and ``on_bad_image`` are accepted only so that ``data.path=`` / ``data.on_bad_image=`` stay the
    user's overrides for ``data=zip``: the config hands them to ``source``, and this class never reads them. ``cache=True`` decodes the zip once into
    ``cache_dir`` (see ``pokedex.data.cache``) and reads whole batches from it instead of decoding PNGs.
    """

    def __init__(
        self,
        zip_path: str,
        source: DataSource | None = None,
        image_size: int = 128,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        prefetch_factor: int | None = 4,
        limit_classes: int | None = None,
        augment: BatchAugment | None = None,
        reupload: Reupload | None = None,
        path: str | None = None,
        on_bad_image: str = "error",
        cache: bool = False,
        cache_dir: str = "data/cache",
    ) -> None:
        super().__init__()
        self.zip_path = Path(zip_path)
        self.source = source
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.persistent_workers = persistent_workers and num_workers > 0
        self.prefetch_factor = prefetch_factor if num_workers > 0 else None
        self.limit_classes = limit_classes
        self.augment = augment
        self.reupload = reupload
        del path, on_bad_image  # consumed by `source` through the config (see the class docstring)
        self.cache, self.cache_dir = cache, Path(cache_dir)
        self.decoded: DecodedCache | None = None
        self.index: DatasetIndex | None = None
        self.datasets: dict[str, Dataset] = {}

    # -- data ------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.source is not None:
            ensure_dataset(self.source, self.zip_path)
        elif not self.zip_path.exists():
            raise DatasetError(f"{self.zip_path}: dataset zip not found and no data.source configured to build it")
        if self.cache:
            self.decoded_cache()

    def decoded_cache(self) -> DecodedCache:
        """Build (once, on first use) or validate the decoded cache; memoised for this process."""
        if self.decoded is None:
            self.decoded = ensure_cache(self.zip_path, self.cache_dir, self.image_size)
        return self.decoded

    def load_index(self) -> DatasetIndex:
        if self.index is None:
            index = read_index(self.zip_path)
            if self.limit_classes:
                keep = self.limit_classes
                index = DatasetIndex(index.classes[:keep], [m for m in index.members if m.label < keep], index.meta)
            for split in ("train", "val", "test"):
                if not index.split(split):
                    raise DatasetError(f"{self.zip_path}: the {split!r} split is empty; rebuild with other fractions")
            self.index = index
        return self.index

    @property
    def class_names(self) -> list[str]:
        return list(self.load_index().classes)

    @property
    def num_classes(self) -> int:
        return len(self.load_index().classes)

    def make_dataset(self, split: str) -> Dataset:
        members = [(m.path, m.label) for m in self.load_index().split(split)]
        if self.cache:
            dataset: Dataset = self.decoded_cache().dataset(members)
        else:
            dataset = ZipImageDataset(self.zip_path, members, self.image_size)
        if split == "train" and self.reupload is not None and self.reupload.p > 0:
            return ReuploadDataset(dataset, self.reupload)
        return dataset

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val", "test"):
            if split not in self.datasets:
                self.datasets[split] = self.make_dataset(split)

    # -- loaders ---------------------------------------------------------------------------------------
    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        self.setup()
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if shuffle else self.eval_batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(self.datasets[split]) > self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor,
            collate_fn=getattr(self.datasets[split], "collate_fn", None),  # the decoded cache reads whole batches
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches where they now live (the GPU, when there is one)."""
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            images, labels = batch
            return self.augment(images), labels
        return batch
