"""Writing a synthetic dataset: the data (atomically) and a manifest that says how it was made.

Tables go to CSV/Parquet by extension. Image sets go to a MedMNIST-format ``.npz`` (so the same readers load them
back) or, for any other name, to a folder of class-per-folder PNGs with a ``labels.csv``.
"""

from __future__ import annotations

import datetime as dt
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scarce.errors import ConfigError
from scarce.io import TABLE_SUFFIXES, atomic_folder, atomic_path, class_folder_names, sha256_file, write_json, write_table

MANIFEST = "manifest.json"
IMAGE_SUFFIXES = (".npz",)  # anything else (no suffix) is a PNG folder
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
    for suffix in (*TABLE_SUFFIXES, *IMAGE_SUFFIXES):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(f"{name}.{MANIFEST}")


def image_output_kind(output: str | Path, key: str = "output") -> str:
    """"npz" or "png" for an image dataset path; a table extension is a clear error."""
    name = str(output)
    if name.endswith(".npz"):
        return "npz"
    if any(name.endswith(s) for s in TABLE_SUFFIXES):
        raise ConfigError(f"{key}={name!r}: images are written to a .npz file or a PNG folder (a path without "
                          "an extension), not a table")
    if Path(name).suffix:
        raise ConfigError(f"{key}={name!r}: unknown extension {Path(name).suffix!r}; use .npz or a folder name")
    return "png"


def write_images_npz(data, path: str | Path) -> Path:
    """MedMNIST layout: ``train_images`` (N, H, W) or (N, H, W, 3), ``train_labels`` (N, 1) or (N, K), ``classes``."""
    images = data.images[..., 0] if data.images.shape[-1] == 1 else data.images
    labels = data.labels if data.labels.ndim == 2 else data.labels[:, None]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, train_images=images, train_labels=labels, classes=np.asarray(data.classes))
    return Path(path)


def write_images_png(data, path: str | Path) -> Path:
    """``<path>/<class>/<index>.png`` and ``<path>/labels.csv``; built in a temporary folder, then renamed."""
    from PIL import Image

    out = Path(path)
    folders = class_folder_names(list(data.classes))
    with atomic_folder(out) as tmp:
        rows = []
        width = len(str(max(len(data) - 1, 0)))
        for i, (img, label) in enumerate(zip(data.images, data.labels)):
            if data.multi_label:
                folder, label_text = "images", " ".join(str(int(v)) for v in label)
            else:
                folder, label_text = folders[int(label)], data.classes[int(label)]
            name = f"{folder}/{i:0{width}d}.png"
            (tmp / folder).mkdir(exist_ok=True)
            Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(tmp / name)
            rows.append((name, label_text))
        pd.DataFrame(rows, columns=["file", "label"]).to_csv(tmp / "labels.csv", index=False)
    return out


def _describe(data: Any) -> dict:
    if isinstance(data, pd.DataFrame):
        return {"rows": int(len(data)), "columns": list(map(str, data.columns))}
    if hasattr(data, "waves"):
        from speech.audio import describe_audio_set

        return describe_audio_set(data)
    counts = (data.labels.sum(0) if data.multi_label else np.bincount(data.labels, minlength=len(data.classes)))
    return {"images": int(len(data)), "image_shape": list(data.images.shape[1:]), "dtype": str(data.images.dtype),
            "classes": list(data.classes), "class_counts": dict(zip(data.classes, map(int, counts)))}


def write_dataset(data: Any, output: str | Path, *, config: dict, checkpoint: str | None, seed: int | None,
                  extra: dict | None = None) -> tuple[Path, Path]:
    """Write a table (DataFrame) or an image set (ImageSet) by ``output``'s name, and its manifest.

    Returns (data path, manifest path)."""
    if isinstance(data, pd.DataFrame):
        path = write_table(data, output, key="output")
        digest = sha256_file(path)
    elif hasattr(data, "waves") and hasattr(data, "sample_rate"):  # speech: an AudioSet -> WAV folder + labels.csv
        from speech.audio import LABELS_CSV, write_audio_set

        path = write_audio_set(data, output)
        digest = sha256_file(path / LABELS_CSV)
    elif hasattr(data, "images") and hasattr(data, "labels"):
        kind = image_output_kind(output)
        path = write_images_npz(data, output) if kind == "npz" else write_images_png(data, output)
        digest = sha256_file(path) if kind == "npz" else sha256_file(path / "labels.csv")
    else:
        raise TypeError(f"no writer for {type(data).__name__}")
    manifest = {
        "output": str(path.resolve()),
        "output_sha256": digest,
        **_describe(data),
        "seed": seed,
        "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
        "checkpoint_sha256": sha256_file(checkpoint) if checkpoint else None,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "config": config,
        **(extra or {}),
    }
    return path, write_json(manifest_path(path), manifest)
