"""Real anatomy as 2D slice stacks on one grid: MNI152 tissue fractions, its real T1, AAL labels, Colin27 T1.

All volumes are resampled (by world coordinates, through their affines) onto the MNI152 grid block-averaged by
``factor``; axial slices are cropped to one square box around the brain and resized to ``size`` pixels, so a
simulated slice, its label map and the real slices at the same index show the same anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from physics.phantoms import AAL_CLASSES, MRICRON, Volume, brain_tissues, downsample, group_aal, load_colin27, \
    load_mni152, resample
from scarce.errors import DataError, check_range


@dataclass
class SliceStack:
    """N axial slices of size S x S. fractions (N, 3, S, S) csf/gm/wm; mni_t1 (N, S, S) real template in [0, 1];
    labels (N, S, S) AAL classes or None; colin_t1 (N, S, S) in [0, 1] or None; spacing_mm: pixel size; z_mm:
    (N,) world z of each slice."""

    fractions: torch.Tensor
    mni_t1: torch.Tensor
    labels: torch.Tensor | None
    colin_t1: torch.Tensor | None
    spacing_mm: float
    z_mm: np.ndarray
    classes: tuple[str, ...] = AAL_CLASSES


def _scaled(vol: np.ndarray) -> np.ndarray:
    """Intensities / their 99.5th percentile inside the head, clipped to [0, 1]."""
    hi = np.percentile(vol[vol > 0], 99.5) if (vol > 0).any() else 1.0
    return np.clip(vol / max(hi, 1e-6), 0, 1).astype(np.float32)


def _crop_resize(x: np.ndarray, box: tuple[slice, slice], size: int, mode: str) -> torch.Tensor:
    """(C, X, Y, N) -> (N, C, size, size) slices cropped to ``box``; rows = -y (anterior at the top), cols = x."""
    t = torch.from_numpy(np.ascontiguousarray(x[:, box[0], box[1]])).float()  # (C, x, y, N)
    t = t.permute(3, 0, 2, 1).flip(-2)  # (N, C, y, x) with anterior (large y) on top
    if mode == "nearest":
        return F.interpolate(t, size=(size, size), mode="nearest")
    return F.interpolate(t, size=(size, size), mode="area")


def mni_slices(size: int = 64, factor: int = 2, z_range: tuple[float, float] = (-30.0, 60.0), n_slices: int = 24,
               mni_root: str | Path | None = None, atlas_root: str | Path | None = MRICRON,
               colin: bool = True) -> SliceStack:
    """Axial slices of the MNI152 anatomy between world z_range (mm), with AAL labels and Colin27 T1 when the
    mricron-data files are at ``atlas_root`` (None: no labels, no Colin27)."""
    check_range("size", size, 8, integer=True)
    check_range("factor", factor, 1, integer=True)
    check_range("n_slices", n_slices, 1, integer=True)
    mni = load_mni152(mni_root)
    gm, wm, t1 = (downsample(mni[k].data, factor) for k in ("gm", "wm", "t1"))
    aff = mni["t1"].affine @ np.diag([factor, factor, factor, 1.0])
    aff[:3, 3] = mni["t1"].affine[:3, 3] + mni["t1"].affine[:3, :3] @ np.full(3, (factor - 1) / 2)
    fr, mask = brain_tissues(gm, wm)
    # slice indices at evenly spaced world z within z_range
    zs = np.linspace(*z_range, n_slices)
    k = np.rint((zs - aff[2, 3]) / aff[2, 2]).astype(int)
    if (k < 0).any() or (k >= gm.shape[2]).any():
        raise DataError(f"z_range={z_range} mm leaves the MNI152 volume (z from {aff[2, 3]:.0f} to "
                        f"{aff[2, 3] + aff[2, 2] * (gm.shape[2] - 1):.0f} mm)")
    # one square in-plane box around the whole brain (all slices share it)
    xs, ys = np.nonzero(mask.any(2))
    cx, cy = (xs.min() + xs.max()) // 2, (ys.min() + ys.max()) // 2
    half = int(max(xs.max() - xs.min(), ys.max() - ys.min()) // 2 + 2)
    pad = ((half, half), (half, half), (0, 0))
    fr = np.stack([np.pad(f, pad) for f in fr])
    box = (slice(cx, cx + 2 * half), slice(cy, cy + 2 * half))
    fractions = _crop_resize(fr[..., k], box, size, "area")
    mni_t1 = _crop_resize(np.pad(_scaled(t1 * mask), pad)[None][..., k], box, size, "area")[:, 0]
    labels = colin_t1 = None
    if atlas_root is not None and (Path(atlas_root) / "aal.nii.gz").is_file():
        c = load_colin27(atlas_root)
        shape = gm.shape
        aal = group_aal(resample(c["aal"], aff, shape, order=0))
        labels = _crop_resize(np.pad(aal, pad)[None][..., k].astype(np.float32), box, size, "nearest")[:, 0].long()
        if colin:
            ct1 = resample(Volume(c["t1"].data, c["t1"].spacing_mm, c["t1"].affine), aff, shape, order=1)
            colin_t1 = _crop_resize(np.pad(_scaled(ct1), pad)[None][..., k], box, size, "area")[:, 0]
    spacing = 2 * half * abs(aff[0, 0]) / size
    return SliceStack(fractions, mni_t1, labels, colin_t1, float(spacing), zs)
