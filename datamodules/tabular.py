"""LightningDataModule for any CSV/Parquet table: schema, deterministic split, scarcity, fitted transformer."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.table_schema import TableSchema
from datamodules.table_transformer import TableTransformer
from scarce.errors import ConfigError, DataError, check_range, unknown_columns
from scarce.io import atomic_path, read_table, sha256_file

log = logging.getLogger(__name__)
SPLIT_FILE = "data_split.npz"
SPLITS = ("train", "val", "test")


class Rows(Dataset):
    """Rows of one (N, D) tensor, fetched a batch at a time: one gather per batch instead of B items collated."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:  # used by DataLoader's fetcher when defined
        return self.x[torch.as_tensor(indices)]


def as_batch(rows: torch.Tensor) -> tuple[torch.Tensor]:
    """collate_fn: the fetched (B, D) tensor is already the batch."""
    return (rows,)


class TabularDataModule(L.LightningDataModule):
    """Reads a table, splits it train/val/test deterministically and serves transformed rows to the VAE.

    The transformer is fitted on the (possibly scarce) training split only; the test split is never shown to the
    generator and is what ``evaluate.py`` tests downstream models on.
    """

    def __init__(
        self,
        path: str,
        schema: Mapping[str, Any] | None = None,
        schema_path: str | None = None,
        columns: Sequence[str] | None = None,
        max_rows: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        scarcity: float = 1.0,
        batch_size: int = 500,
        num_workers: int = 0,
        transformer: Mapping[str, Any] | None = None,
        output_dir: str | None = None,
        split_file: str | None = None,
    ):
        super().__init__()
        self.path = str(path)
        self.schema_overrides = dict(schema or {})
        self.schema_path = schema_path
        self.columns = list(columns) if columns else None
        self.max_rows = check_range("datamodule.max_rows", max_rows, 1, integer=True, allow_none=True)
        self.val_fraction = check_range("datamodule.val_fraction", val_fraction, 0.0, 0.5, high_inclusive=False)
        self.test_fraction = check_range("datamodule.test_fraction", test_fraction, 0.0, 0.9, low_inclusive=False)
        if val_fraction + test_fraction >= 1:
            raise ConfigError(
                f"datamodule.val_fraction + datamodule.test_fraction = {val_fraction + test_fraction} must be < 1"
            )
        self.split_seed = check_range("datamodule.split_seed", split_seed, 0, integer=True)
        self.scarcity = check_range("datamodule.scarcity", scarcity, 0.0, 1.0, low_inclusive=False)
        self.batch_size = check_range("datamodule.batch_size", batch_size, 1, integer=True)
        self.num_workers = check_range("datamodule.num_workers", num_workers, 0, integer=True)
        self.transformer_options = dict(transformer or {})
        self.output_dir = output_dir
        self.split_file = split_file
        self.table: pd.DataFrame | None = None
        self.splits: dict[str, np.ndarray] = {}
        self.schema: TableSchema | None = None
        self.transformer: TableTransformer | None = None
        self.tensors: dict[str, torch.Tensor] = {}

    # ---------------------------------------------------------------------------------------------- setup
    def load_table(self) -> pd.DataFrame:
        """The source table (all rows, selected columns), read once."""
        if self.table is None:
            df = read_table(self.path, key="datamodule.path")
            if self.columns:
                missing = [c for c in self.columns if c not in df.columns]
                if missing:
                    raise unknown_columns("datamodule.columns", missing, df.columns)
                df = df[self.columns]
            if len(df) == 0:
                raise DataError(f"datamodule.path={self.path!r}: the table has no rows")
            self.table = df
        return self.table

    def make_splits(self, n: int) -> dict[str, np.ndarray]:
        """Row indices of the source table for train/val/test; deterministic in ``split_seed``."""
        rng = np.random.default_rng(self.split_seed)
        rows = np.arange(n)
        if self.max_rows is not None and n > self.max_rows:
            rows = np.sort(rng.choice(n, self.max_rows, replace=False))
        perm = rng.permutation(rows)
        n_test = max(1, int(round(len(perm) * self.test_fraction)))
        n_val = int(round(len(perm) * self.val_fraction))
        if len(perm) - n_test - n_val < 1:
            raise DataError(f"datamodule: {len(perm)} rows leave no training rows after the val/test split")
        test, val, train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
        if self.scarcity < 1.0:  # the first x of a fixed permutation: scarcer runs are subsets of richer ones
            train = train[: max(1, int(round(len(train) * self.scarcity)))]
        return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}

    def setup(self, stage: str | None = None) -> None:
        if self.transformer is not None:  # idempotent: train.py calls it before Lightning does
            return
        df = self.load_table()
        self.splits = self.load_split(self.split_file) if self.split_file else self.make_splits(len(df))
        overrides = dict(self.schema_overrides)
        if self.schema_path:
            overrides = {**TableSchema.from_sdv_metadata(self.schema_path, df), **overrides}
        max_categories = self.transformer_options.get("max_categories", 200)
        train = self.real("train")
        schema = TableSchema.infer(train, overrides, max_categories=max_categories)
        self.transformer = TableTransformer(schema, **self.transformer_options).fit(train)
        self.schema = self.transformer.schema  # as fitted (an all-missing column is refined to constant)
        log.info("schema:\n%s", self.transformer.describe().to_string(index=False))
        for split in SPLITS:
            if len(self.splits[split]):
                part = self.real(split)
                unknown = "error" if split == "train" else "most_frequent"
                mat = self.transformer.transform(part, seed=self.split_seed, handle_unknown=unknown)
                if self.transformer.unknown_counts:
                    log.info("%s split: categories unseen in training counted as the most frequent level: %s",
                             split, self.transformer.unknown_counts)
                self.tensors[split] = torch.from_numpy(mat)
        if self.output_dir and self.trainer_is_rank_zero():
            self.save_split(Path(self.output_dir) / SPLIT_FILE)

    def trainer_is_rank_zero(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return trainer is None or trainer.is_global_zero

    def real(self, split: str) -> pd.DataFrame:
        """A real split as a table (original columns and dtypes)."""
        if split not in SPLITS:
            raise ConfigError(f"split={split!r} is not allowed; expected one of {list(SPLITS)}")
        return self.load_table().iloc[self.splits[split]].reset_index(drop=True)

    unit = "rows"  # what generate_after_training counts

    def train_size(self) -> int:
        self.setup("fit")
        return len(self.splits["train"])

    def generation_kwargs(self, n: int, seed: int = 0) -> dict[str, Any]:
        """Extra arguments for the generator's ``generate``: real identifier values fresh tokens must avoid."""
        return {"real_identifiers": self.real_identifiers()}

    def real_identifiers(self) -> dict[str, np.ndarray]:
        """All real values of identifier columns (every split), which fresh synthetic tokens must avoid."""
        df = self.load_table()
        return {c: df[c].dropna().astype(str).unique() for c in self.schema.names("identifier")}

    def save_split(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, source_sha256=np.array(sha256_file(self.path)), **self.splits)

    def load_split(self, path: str) -> dict[str, np.ndarray]:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"datamodule.split_file={path!r}: no such file")
        with np.load(p) as z:
            if str(z["source_sha256"]) != sha256_file(self.path):
                raise DataError(f"datamodule.split_file={path!r} was made from a different file than {self.path!r}")
            return {s: z[s] for s in SPLITS}

    # -------------------------------------------------------------------------------------------- loaders
    def model_kwargs(self) -> dict[str, Any]:
        """What the model needs from the data: the layout and the fitted transformer (plain data)."""
        self.setup("fit")
        state = self.transformer.state_dict()
        source = {"path": str(Path(self.path).resolve()), "identifiers": self.schema.names("identifier")}
        return {"layout": state["layout"], "transformer_state": state, "source": source}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        data = self.tensors.get(split)
        if data is None or len(data) == 0:
            raise DataError(f"datamodule: the {split} split is empty; raise datamodule.{split}_fraction or max_rows")
        # Fewer rows than the batch size still trains: the batch shrinks to the split.
        bs = min(self.batch_size, len(data))
        return DataLoader(Rows(data), batch_size=bs, shuffle=shuffle, collate_fn=as_batch,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
