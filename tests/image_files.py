"""Small image files in the layouts the readers take, written by tests (shared by several test files)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------------------------------ file writers
def write_npz(path: Path, shape=(8, 8), rgb=False, k=None, n=(30, 6, 10), classes=None) -> Path:
    """A MedMNIST-style file: random uint8 images, labels in 3 classes (or a (N, k) multi-hot matrix)."""
    arrays = {}
    for split, m in zip(("train", "val", "test"), n):
        if m == 0:
            continue
        arrays[f"{split}_images"] = RNG.integers(0, 256, (m, *shape, 3) if rgb else (m, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = (RNG.integers(0, 2, (m, k)) if k else (np.arange(m) % 3)[:, None])
    if classes is not None:
        arrays["classes"] = np.array(classes)
    np.savez(path, **arrays)
    return path


def write_idx(path: Path, arr: np.ndarray) -> None:
    """An idx file by its spec: 0x0000, dtype 0x08 (ubyte), ndim, big-endian int32 dims, then the bytes."""
    head = bytes([0, 0, 8, arr.ndim]) + np.asarray(arr.shape, ">i4").tobytes()
    raw = head + arr.astype(np.uint8).tobytes()
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def write_idx_folder(root: Path, gz: bool, n_train=20, n_test=8) -> dict[str, np.ndarray]:
    root.mkdir(parents=True)
    ext = ".gz" if gz else ""
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        data[f"{prefix}_x"] = RNG.integers(0, 256, (n, 6, 6), dtype=np.uint8)
        data[f"{prefix}_y"] = np.arange(n) % 10
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", data[f"{prefix}_x"])
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", data[f"{prefix}_y"])
    return data


def write_dicom(path: Path, pixels: np.ndarray, slope=1.0, intercept=0.0, photometric="MONOCHROME2") -> None:
    """A minimal valid single-frame 16-bit unsigned DICOM file (pydicom 3)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def png_folder(root: Path, n_per_class=(6, 4), size=(10, 10)) -> Path:
    """Two class folders of grayscale PNGs whose pixel value encodes class and index."""
    for c, n in enumerate(n_per_class):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full(size, 20 * c + i, np.uint8)).save(root / f"class{c}" / f"{i:02d}.png")
    return root


# ----------------------------------------------------------------------------------------------------- .npz


def nifti(path: Path, vol: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(vol, np.eye(4)).to_filename(str(path))
