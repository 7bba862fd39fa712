"""Writing a synthetic dataset: the data file (atomically) and a manifest that says how it was made."""

from __future__ import annotations

import datetime as dt
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from scarce.io import sha256_file, write_json, write_table

MANIFEST = "manifest.json"
_PACKAGES = ("scarce", "torch", "lightning", "numpy", "pandas", "scikit-learn", "hydra-core")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def manifest_path(output: str | Path) -> Path:
    """``synthetic.csv`` -> ``synthetic.manifest.json`` beside it (so several outputs can share a folder)."""
    p = Path(output)
    name = p.name
    for suffix in (".csv.gz", ".csv.zip", ".csv", ".parquet", ".pq", ".npz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(f"{name}.{MANIFEST}")


def write_dataset(data: Any, output: str | Path, *, config: dict, checkpoint: str | None, seed: int | None,
                  extra: dict | None = None) -> tuple[Path, Path]:
    """Write ``data`` by extension and its manifest; returns (data path, manifest path)."""
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"no writer for {type(data).__name__}")
    path = write_table(data, output, key="output")
    manifest = {
        "output": str(path.resolve()),
        "output_sha256": sha256_file(path),
        "rows": int(len(data)),
        "columns": list(map(str, data.columns)),
        "seed": seed,
        "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
        "checkpoint_sha256": sha256_file(checkpoint) if checkpoint else None,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "config": config,
        **(extra or {}),
    }
    return path, write_json(manifest_path(path), manifest)
