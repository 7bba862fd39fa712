"""LightningDataModule for labelled image sets: deterministic split, nested scarcity, in-memory [-1, 1] tensors.

The source (one of ``datamodules.image_readers``) is read once per process. Splits the source lacks are drawn
here, stratified by class and grouped by volume/patient where the source records groups, so slices of one scan
never straddle train and test. Scarce training sets (``per_class``, ``scarcity``) are the first images of one
fixed permutation of the training pool, so a smaller set is always a subset of a larger one.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.image_readers import resize_nchw
from datamodules.image_set import IMAGE, LABEL, ImageSet
from scarce.errors import ConfigError, DataError, check_choice, check_range
from scarce.io import atomic_path

log = logging.getLogger(__name__)
SPLIT_FILE = "data_split.npz"
SPLITS = ("train", "val", "test")
GRAY = torch.tensor([0.299, 0.587, 0.114])  # ITU-R BT.601 luma weights for RGB -> gray
CHUNK = 4096  # images converted at a time, bounding the float32 working copy during resize


class ImageRows(Dataset):
    """Images and labels held in memory, fetched a batch at a time: one gather per batch, already a batch dict."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {IMAGE: self.images[i], LABEL: self.labels[i]}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:  # used by DataLoader's fetcher
        idx = torch.as_tensor(indices)
        return {IMAGE: self.images[idx], LABEL: self.labels[idx]}


def fetched_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """collate_fn: the fetched dict is already the batch (a module-level function so worker processes can pickle it)."""
    return batch


def labels_digest(labels: np.ndarray) -> str:
    """sha256 of a label array: a cheap fingerprint that a split file belongs to the same image set."""
    return hashlib.sha256(np.ascontiguousarray(labels, np.int64).tobytes()).hexdigest()


class ImageDataModule(L.LightningDataModule):
    """Serves an image source as batches ``{IMAGE: (B, C, H, W) float in [-1, 1], LABEL: (B,) int64 | (B, K) float}``.

    Fractions are of the source's train part (all images when it has no split; units are groups where it has them)
    and only draw the splits the source lacks, stratified by class. Pixel scale:
    uint8 / 255, uint16 / (max over the training pool), float sources as given in [0, 1].
    """

    def __init__(
        self,
        source: Any,
        image_size: int | None = None,
        channels: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        per_class: int | None = None,
        scarcity: float = 1.0,
        max_images: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        output_dir: str | None = None,
        split_file: str | None = None,
    ):
        super().__init__()
        if not (callable(getattr(source, "read", None)) and callable(getattr(source, "describe", None))):
            raise ConfigError(f"datamodule.source={type(source).__name__} is not allowed; expected an image source "
                              "with read() and describe() (a datamodules.image_readers class via _target_)")
        self.source = source
        self.image_size = check_range("datamodule.image_size", image_size, 4, integer=True, allow_none=True)
        self.channels = None if channels is None else check_choice("datamodule.channels", channels, [1, 3])
        self.val_fraction = check_range("datamodule.val_fraction", val_fraction, 0.0, 0.5, high_inclusive=False)
        self.test_fraction = check_range("datamodule.test_fraction", test_fraction, 0.0, 0.9, low_inclusive=False)
        if val_fraction + test_fraction >= 1:
            raise ConfigError(
                f"datamodule.val_fraction + datamodule.test_fraction = {val_fraction + test_fraction} must be < 1"
            )
        self.split_seed = check_range("datamodule.split_seed", split_seed, 0, integer=True)
        self.per_class = check_range("datamodule.per_class", per_class, 1, integer=True, allow_none=True)
        self.scarcity = check_range("datamodule.scarcity", scarcity, 0.0, 1.0, low_inclusive=False)
        self.max_images = check_range("datamodule.max_images", max_images, 1, integer=True, allow_none=True)
        self.batch_size = check_range("datamodule.batch_size", batch_size, 1, integer=True)
        self.num_workers = check_range("datamodule.num_workers", num_workers, 0, integer=True)
        self.output_dir = output_dir
        self.split_file = split_file
        self.splits: dict[str, np.ndarray] = {}  # indices into the source's images
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.classes: list[str] = []
        self.multi_label = False
        self.scarce_seed = split_seed
        self.uint16_scale: float | None = None  # max pixel value of the training pool, for uint16 sources
        self.stored_shape: tuple[int, int, int] | None = None  # (H, W, C) as read
        self.source_description = ""

    # ---------------------------------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if self.tensors:  # idempotent: train.py calls it before Lightning does
            return
        data = self.source.read()
        if len(data) == 0:
            raise DataError(f"datamodule.source ({self.source.describe()}) holds no images")
        self.source_description = self.source.describe()
        self.classes, self.multi_label = list(data.classes), data.multi_label
        self.stored_shape = tuple(data.images.shape[1:])
        if self.split_file:
            pool, val, test, seed = self.load_split(self.split_file, data)
        else:
            (pool, val, test), seed = self.make_splits(data), self.split_seed
        self.scarce_seed = seed  # the permutation behind per_class / scarcity travels with a reused split
        self.splits = {"train": self.scarce_train(pool, data.labels), "train_pool": pool, "val": val, "test": test}
        if data.images.dtype == np.uint16:  # the pool, not the scarce subset: every scarcity level shares one scale
            self.uint16_scale = float(max(int(data.images[pool].max()), 1))
        for split in SPLITS:
            idx = self.splits[split]
            self.tensors[split] = self._convert(data.images[idx], data.labels[idx])
        log.info("%s", self.describe())
        if self.output_dir and self.trainer_is_rank_zero():
            self.save_split(Path(self.output_dir) / SPLIT_FILE, data)

    def trainer_is_rank_zero(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return trainer is None or trainer.is_global_zero

    def make_splits(self, data: ImageSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train pool, val, test) indices; the source's own splits are kept, missing ones drawn from its train part."""
        rng = np.random.default_rng(self.split_seed)
        n = len(data)
        rows = np.arange(n)
        if self.max_images is not None and n > self.max_images:
            rows = np.sort(rng.choice(n, self.max_images, replace=False))
        own = data.split[rows] if data.split is not None else np.full(len(rows), "train")
        parts = {s: rows[own == s] for s in SPLITS}
        pool = parts["train"]
        draws = [(s, f) for s, f in (("test", self.test_fraction), ("val", self.val_fraction)) if not len(parts[s])]
        if draws and len(pool):
            pool = self._draw(pool, data, rng, draws, parts)
        if not len(pool):
            raise DataError(f"datamodule: {len(rows)} images leave no training images after the val/test split")
        return pool, parts["val"], parts["test"]

    @staticmethod
    def _draw(pool: np.ndarray, data: ImageSet, rng: np.random.Generator, draws: list[tuple[str, float]],
              parts: dict[str, np.ndarray]) -> np.ndarray:
        """Move ``fraction`` of the pool into each split of ``draws`` (in ``parts``); returns what is left.

        Units are groups (volumes, patients) where the source records them, else images; a unit's stratum is the
        class of its first image (one stratum for multi-label sets). Each stratum keeps at least one unit.
        """
        groups = data.meta.get("groups")
        units = np.asarray(groups)[pool] if groups is not None and len(groups) == len(data) else pool
        uniq, first = np.unique(units, return_index=True)
        strata = np.zeros(len(uniq), np.int64) if data.multi_label else data.labels[pool][first]
        taken: dict[str, list[np.ndarray]] = {s: [] for s, _ in draws}
        for c in np.unique(strata):
            members = rng.permutation(uniq[strata == c])
            start = 0
            for s, frac in draws:
                k = min(round(len(members) * frac), len(members) - start - 1)
                if k > 0:
                    taken[s].append(members[start:start + k])
                    start += k
        moved = []
        for s, _ in draws:
            chosen = np.concatenate(taken[s]) if taken[s] else np.zeros(0, units.dtype)
            parts[s] = pool[np.isin(units, chosen)]
            moved.append(parts[s])
        return np.setdiff1d(pool, np.concatenate(moved))

    def scarce_train(self, pool: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The training indices after ``per_class`` and ``scarcity``: a prefix of one fixed permutation of the pool."""
        if self.per_class is None and self.scarcity == 1.0:
            return pool
        perm = np.random.default_rng([self.scarce_seed, 1]).permutation(pool)
        if self.per_class is not None:
            perm = self._first_per_class(perm, labels)
        if self.scarcity < 1.0:
            perm = perm[: max(1, round(len(perm) * self.scarcity))]
        return np.sort(perm)

    def _first_per_class(self, perm: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The first ``per_class`` images of each class in ``perm`` order (multi-label: while any of its labels,
        or "no label" for an all-zero row, is below the count; still nested in ``per_class``)."""
        n = self.per_class
        y = labels[perm]
        if y.ndim == 1:
            keep = np.zeros(len(perm), bool)
            counts = {}
            for c in np.unique(y):
                where = np.flatnonzero(y == c)
                keep[where[:n]] = True
                counts[c] = len(where)
        else:
            y = np.concatenate([y, (y.sum(1) == 0)[:, None].astype(np.int64)], axis=1)  # "no label" column
            seen = np.zeros(y.shape[1], np.int64)
            keep = np.zeros(len(perm), bool)
            for i, row in enumerate(y.astype(bool)):
                if np.any(seen[row] < n):
                    keep[i] = True
                    seen[row] += 1
            counts = dict(enumerate(y.sum(0)))
        short = {self._class_name(c): int(k) for c, k in counts.items() if k < n}
        if short:
            log.info("datamodule.per_class=%d: these classes have fewer training images and are kept whole: %s",
                     n, short)
        return perm[keep]

    def _class_name(self, c: int) -> str:
        return self.classes[c] if c < len(self.classes) else "(no label)"

    def save_split(self, path: Path, data: ImageSet) -> None:
        """Indices of each split, and what they index (source description, image count, label fingerprint)."""
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, source=np.array(self.source_description), n_images=np.array(len(data)),
                     split_seed=np.array(self.scarce_seed),
                     labels_sha256=np.array(labels_digest(data.labels)), **self.splits)

    def load_split(self, path: str, data: ImageSet) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(train pool, val, test, seed) from a saved split; ``per_class`` / ``scarcity`` are applied to the pool
        again with the file's seed, so the same settings give the same training images."""
        p = Path(path)
        if not p.is_file():
            raise DataError(f"datamodule.split_file={path!r}: no such file")
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("source", "n_images", "labels_sha256", "split_seed", "train_pool", "val", "test")
                       if k not in z.files]
            if missing:
                raise DataError(f"datamodule.split_file={path!r} has no {missing}; it is not an image split file")
            if int(z["n_images"]) != len(data) or str(z["labels_sha256"]) != labels_digest(data.labels):
                raise DataError(f"datamodule.split_file={path!r} was made from a different image set "
                                f"({str(z['source'])!r}, {int(z['n_images'])} images) than {self.source_description!r}"
                                f" ({len(data)} images)")
            if str(z["source"]) != self.source_description:
                log.info("split file %s was made from %r; the same images are now read from %r", path,
                         str(z["source"]), self.source_description)
            return z["train_pool"], z["val"], z["test"], int(z["split_seed"])

    # ------------------------------------------------------------------------------------------ conversion
    def _convert(self, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, H, W, C) stored pixels -> ((N, C', S, S) float32 in [-1, 1], labels int64 (N,) or float (N, K))."""
        if images.dtype == np.uint8:
            scale = 255.0
        elif images.dtype == np.uint16:
            scale = self.uint16_scale or float(max(int(images.max()) if images.size else 1, 1))
        elif np.issubdtype(images.dtype, np.floating):
            scale = 1.0
        else:
            raise DataError(f"datamodule: images of dtype {images.dtype} are not supported; expected uint8, uint16 "
                            "or float in [0, 1]")
        h, w = images.shape[1:3]
        if self.image_size is None and h != w:
            raise ConfigError(f"datamodule.image_size=None keeps the stored size, but the images are {h}x{w}; set "
                              "datamodule.image_size to resize them to a square")
        size = (self.image_size, self.image_size) if self.image_size else (h, w)
        channels = self.channels or images.shape[3]
        out = torch.empty((len(images), channels, *size), dtype=torch.float32)
        for start in range(0, len(images), CHUNK):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + CHUNK]).astype(np.float32))
            x = x.permute(0, 3, 1, 2) / scale  # (n, C, H, W) in [0, 1]
            if x.shape[1] == 3 and channels == 1:
                x = torch.einsum("nchw,c->nhw", x, GRAY)[:, None]
            elif x.shape[1] == 1 and channels == 3:
                x = x.expand(-1, 3, -1, -1)
            out[start:start + CHUNK] = (resize_nchw(x, size) * 2 - 1).clamp_(-1, 1)
        y = torch.from_numpy(np.asarray(labels))
        y = y.float() if y.ndim == 2 else y.long()
        return out, y

    def to_tensors(self, image_set: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
        """Another image set (a synthetic .npz read back) as ((N, C, S, S) in [-1, 1], labels), on the real scale."""
        self.setup()
        num = len(self.classes)
        y = image_set.labels
        if image_set.multi_label != self.multi_label or (y.ndim == 2 and y.shape[1] != num) or (
                y.ndim == 1 and len(y) and (y.min() < 0 or y.max() >= num)):
            raise DataError(f"{image_set.source or 'image set'}: its labels (shape {y.shape}) do not fit the real "
                            f"data's {num} {'multi-label columns' if self.multi_label else 'classes'}")
        return self._convert(image_set.images, y)

    # ------------------------------------------------------------------------------------------ inspection
    def model_kwargs(self) -> dict[str, Any]:
        """What a generator needs from the data (plain data, saved in its checkpoint)."""
        self.setup("fit")
        x = self.tensors["train"][0]
        return {"image_size": int(x.shape[-1]), "channels": int(x.shape[1]), "num_classes": len(self.classes),
                "multi_label": bool(self.multi_label), "classes": list(self.classes), "cond_channels": 0,
                "num_params": 0}

    unit = "images"  # what generate_after_training counts

    def train_size(self) -> int:
        return len(self.real("train")[0])

    def generation_kwargs(self, n: int, seed: int = 0) -> dict[str, Any]:
        """Labels to generate: balanced classes (i % K) for single-label data, or real training label vectors drawn
        with replacement for multi-label data (a multi-hot vector has no natural balanced order)."""
        _, y = self.real("train")
        if not self.multi_label:
            return {"labels": torch.arange(n) % len(self.classes)}
        g = torch.Generator().manual_seed(seed)
        return {"labels": y[torch.randint(len(y), (n,), generator=g)]}

    def real(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A real split: ((N, C, S, S) float in [-1, 1], labels (N,) int64 or (N, K) float)."""
        check_choice("split", split, SPLITS)
        self.setup()
        return self.tensors[split]

    def class_counts(self, split: str) -> dict[str, int]:
        """Images per class in a split (multi-label: positives per label column)."""
        _, y = self.real(split)
        counts = y.sum(0).long() if y.ndim == 2 else torch.bincount(y, minlength=len(self.classes))
        return {name: int(k) for name, k in zip(self.classes, counts.tolist())}

    def describe(self) -> str:
        """One line: the source, split sizes, tensor shape and pixel scale."""
        if not self.tensors:
            return f"images from {self.source.describe()} (not set up)"
        x = self.tensors["train"][0]
        sizes = ", ".join(f"{s} {len(self.tensors[s][0])}" for s in SPLITS)
        scale = f", uint16 scale 1/{self.uint16_scale:g}" if self.uint16_scale else ""
        kind = "multi-label" if self.multi_label else "classes"
        h, w, c = self.stored_shape
        return (f"images from {self.source_description}: {sizes}; stored {h}x{w}x{c} -> {tuple(x.shape[1:])}; "
                f"{len(self.classes)} {kind}{scale}")

    # -------------------------------------------------------------------------------------------- loaders
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        images, labels = self.tensors.get(split, (None, None))
        if images is None or len(images) == 0:
            raise DataError(f"datamodule: the {split} split is empty; raise datamodule.{split}_fraction or "
                            "datamodule.max_images")  # train is never empty: setup keeps at least one image
        # Fewer images than the batch size still trains: the batch shrinks to the split.
        bs = min(self.batch_size, len(images))
        return DataLoader(ImageRows(images, labels), batch_size=bs, shuffle=shuffle, collate_fn=fetched_batch,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
