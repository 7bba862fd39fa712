"""Phantoms and real-anatomy loaders: procedural phantoms, NIfTI/InVesalius loaders on files the tests write, bad
files, and the realism check (simulated T1w from the MNI152 tissue maps vs the real MNI152 T1)."""

from __future__ import annotations

import io
import plistlib
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from physics import mri, phantoms
from physics.phantoms import MRICRON, INVESALIUS
from scarce.errors import DataError


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_shepp_logan_and_random_head():
    sl = phantoms.shepp_logan(64)
    assert sl.shape == (64, 64) and sl.max() == 1.0 and sl[0, 0] == 0
    a = phantoms.random_head((32, 32, 32), torch.Generator().manual_seed(0))
    b = phantoms.random_head((32, 32, 32), torch.Generator().manual_seed(0))
    c = phantoms.random_head((32, 32, 32), torch.Generator().manual_seed(1))
    assert torch.equal(a["labels"], b["labels"]) and not torch.equal(a["labels"], c["labels"])
    assert a["fractions"].shape == (4, 32, 32, 32) and (a["fractions"].sum(0) <= 1).all()
    assert set(a["labels"].unique().tolist()) <= set(range(len(phantoms.HEAD_CLASSES)))
    assert (a["hu"] == 1200).any() and (a["hu"][a["labels"] == 0] == -1000).all()


def test_nifti_is_reoriented_to_ras_with_spacing(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    lps = np.diag([-2.0, -2.0, 3.0, 1.0])  # x and y flipped (LPS-like), 2 x 2 x 3 mm
    vol = phantoms.load_nifti(write_nifti(tmp_path / "lps.nii.gz", data, lps))
    assert vol.spacing_mm == (2.0, 2.0, 3.0)
    assert np.array_equal(vol.data, data[::-1, ::-1, :])  # RAS: array index increases to the right and front
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    with pytest.raises(DataError, match=r"voxel spacing \(2.0, 2.0, 3.0\) mm; expected \(1.0, 1.0, 1.0\)"):
        phantoms.load_nifti(tmp_path / "lps.nii.gz", spacing_mm=(1.0, 1.0, 1.0))


def test_bad_nifti_files_are_clear_errors(tmp_path):
    bad = np.ones((4, 4, 4), np.float32)
    bad[1, 2, 3] = np.nan
    with pytest.raises(DataError, match="1 voxels are NaN"):
        phantoms.load_nifti(write_nifti(tmp_path / "nan.nii.gz", bad, np.eye(4)))
    t = np.deg2rad(20)
    oblique = np.array([[np.cos(t), -np.sin(t), 0, 0], [np.sin(t), np.cos(t), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    with pytest.raises(DataError, match="oblique"):
        phantoms.load_nifti(write_nifti(tmp_path / "obl.nii.gz", np.ones((4, 4, 4), np.float32), oblique))
    with pytest.raises(DataError, match="expected a 3D volume"):
        phantoms.load_nifti(write_nifti(tmp_path / "2d.nii.gz", np.ones((4, 4), np.float32), np.eye(4)))
    with pytest.raises(DataError, match="no such file"):
        phantoms.load_nifti(tmp_path / "missing.nii.gz")
    with pytest.raises(DataError, match="empty brain mask"):
        phantoms.brain_tissues(np.zeros((8, 8, 8)), np.zeros((8, 8, 8)))


def test_mni152_loader_and_atlas_resampling_on_written_files(tmp_path):
    rng = np.random.default_rng(0)
    aff = np.array([[2.0, 0, 0, -8], [0, 2.0, 0, -8], [0, 0, 2.0, -8], [0, 0, 0, 1]])
    gm = np.zeros((8, 8, 8), np.uint8)
    wm = np.zeros((8, 8, 8), np.uint8)
    gm[2:6, 2:6, 2:6], wm[3:5, 3:5, 3:5] = 200, 255
    gm[3:5, 3:5, 3:5] = 0
    for k, arr in (("t1", rng.integers(0, 255, (8, 8, 8)).astype(np.uint8)), ("gm", gm), ("wm", wm)):
        write_nifti(tmp_path / phantoms.MNI152_FILES[k], arr, aff)
    mni = phantoms.load_mni152(tmp_path)
    assert mni["wm"].data.max() == pytest.approx(1.0) and mni["gm"].data.max() == pytest.approx(200 / 255)
    fr, mask = phantoms.brain_tissues(mni["gm"].data, mni["wm"].data, threshold=0.5)
    assert fr.shape == (3, 8, 8, 8) and mask[4, 4, 4] and not mask[0, 0, 0]
    assert np.allclose(fr.sum(0)[mask], 1.0)
    # an atlas on a 1 mm grid covering the same box resamples onto the 2 mm grid by world coordinates
    atlas = np.zeros((16, 16, 16), np.int16)
    atlas[8:, :, :] = 91  # right half (x >= 0 mm) cerebellum
    atlas[:8, :, :] = 5  # left half cortex
    write_nifti(tmp_path / "aal.nii.gz", atlas, np.array([[1.0, 0, 0, -8.5], [0, 1, 0, -8.5], [0, 0, 1, -8.5],
                                                          [0, 0, 0, 1]]))
    a = phantoms.load_nifti(tmp_path / "aal.nii.gz")
    on_grid = phantoms.group_aal(phantoms.resample(a, mni["t1"].affine, (8, 8, 8), order=0))
    assert (on_grid[4:] == 3).all() and (on_grid[:4] == 1).all()


def test_group_aal_classes():
    g = phantoms.group_aal(np.array([0, 1, 42, 71, 78, 79, 90, 91, 116, 117]))
    assert g.tolist() == [0, 1, 1, 2, 2, 1, 1, 3, 3, 0]


def write_inv3(path: Path, hu: np.ndarray, spacing=(0.5, 0.5, 2.0)) -> Path:
    """A minimal InVesalius project: main.plist, matrix.dat (slices, rows, cols) int16 and one bone mask."""
    zyx = np.ascontiguousarray(hu.transpose(2, 1, 0)).astype("<i2")
    mask = np.zeros(tuple(s + 1 for s in zyx.shape), np.uint8)
    mask[1:, 1:, 1:] = np.where(zyx > 300, 255, 0)
    files = {
        "main.plist": plistlib.dumps({"matrix": {"dtype": "int16", "filename": "matrix.dat", "shape": list(zyx.shape)},
                                      "spacing": list(spacing), "masks": {"0": "mask_0.plist"}}),
        "matrix.dat": zyx.tobytes(),
        "mask_0.plist": plistlib.dumps({"mask_file": "mask_0.dat", "mask_shape": list(mask.shape)}),
        "mask_0.dat": mask.tobytes(),
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"tmpdir/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def test_invesalius_loader_on_a_written_project(tmp_path):
    hu = np.full((6, 5, 4), -1000, np.int16)
    hu[2:4, 1:3, 1:3] = 1200
    hu[0, 0, 0] = 40
    ct = phantoms.load_invesalius(write_inv3(tmp_path / "tiny.inv3", hu))
    assert ct["hu"].data.shape == (6, 5, 4) and ct["hu"].spacing_mm == (0.5, 0.5, 2.0)
    assert np.array_equal(ct["hu"].data, hu.astype(np.float32))
    assert np.array_equal(ct["masks"][0], hu > 300)
    (tmp_path / "junk.inv3").write_bytes(b"not a tar")
    with pytest.raises(DataError, match="not a readable InVesalius project"):
        phantoms.load_invesalius(tmp_path / "junk.inv3")


def test_downsample_block_mean():
    x = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
    d = phantoms.downsample(x, 2)
    assert d.shape == (2, 2, 2) and d[0, 0, 0] == x[:2, :2, :2].mean()


def simulated_t1w_r(factor: int = 4) -> float:
    """Pearson r in the brain mask between a spoiled-GRE T1w simulated from the MNI152 GM/WM maps and the real
    MNI152 T1 template, on volumes block-averaged by ``factor``."""
    mni = phantoms.load_mni152()
    gm, wm, t1 = (phantoms.downsample(mni[k].data, factor) for k in ("gm", "wm", "t1"))
    fr, mask = phantoms.brain_tissues(gm, wm)
    p = mri.MRIProtocol(*(torch.tensor([v]) for v in (1.0, 20.0, 4.0, 0.0, 25.0)))
    img = mri.tissue_image(torch.from_numpy(fr)[None].double(), p, mri.relaxation_table(3.0, ("csf", "gm", "wm")))
    return float(np.corrcoef(img[0].numpy()[mask], t1[mask])[0, 1])


def test_realism_simulated_t1w_matches_the_real_mni152_t1():
    try:
        phantoms.nilearn_data_dir()
    except DataError as e:
        pytest.skip(str(e))
    assert simulated_t1w_r(4) >= 0.9


@pytest.mark.skipif(not (MRICRON / "ch2bet.nii.gz").is_file(), reason=f"mricron-data not installed ({MRICRON})")
def test_real_colin27_and_aal_load_on_one_grid():
    c = phantoms.load_colin27()
    assert c["t1"].data.shape == c["aal"].data.shape == (181, 217, 181)
    assert c["aal"].data.max() == 116 and c["t1"].spacing_mm == (1.0, 1.0, 1.0)
    g = phantoms.group_aal(c["aal"].data)
    # cortex is the largest class; the t1 is brighter in deep grey than in background of the stripped brain
    counts = np.bincount(g.ravel(), minlength=4)
    assert counts[1] > counts[3] > counts[2] > 0


@pytest.mark.skipif(not INVESALIUS.is_file(), reason=f"invesalius-examples not installed ({INVESALIUS})")
def test_real_head_ct_loads_in_hounsfield_units():
    ct = phantoms.load_invesalius()
    v = ct["hu"]
    assert v.data.shape == (256, 256, 108) and v.spacing_mm[2] == 1.5
    assert v.data.min() == -1024 and np.percentile(v.data, 99.5) > 1000  # air and bone are there
    assert ct["masks"] and ct["masks"][0].shape == v.data.shape


def test_bad_invesalius_projects_are_clear_errors(tmp_path):
    hu = np.full((6, 5, 4), -1000, np.int16)
    with pytest.raises(DataError, match=r"voxel spacing \[0.5, 0.0, 2.0\] mm is not allowed"):
        phantoms.load_invesalius(write_inv3(tmp_path / "flat.inv3", hu, spacing=(0.5, 0.0, 2.0)))
    # a raw matrix shorter than main.plist says (a truncated export)
    path = write_inv3(tmp_path / "ok.inv3", hu)
    with tarfile.open(path, "r:gz") as tar:
        blobs = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    blobs["tmpdir/matrix.dat"] = blobs["tmpdir/matrix.dat"][:-10]
    with tarfile.open(tmp_path / "short.inv3", "w:gz") as tar:
        for name, blob in blobs.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(DataError, match=r"matrix.dat holds 115 values; main.plist says \(4, 5, 6\)"):
        phantoms.load_invesalius(tmp_path / "short.inv3")
    with pytest.raises(DataError, match="no such file"):
        phantoms.load_invesalius(tmp_path / "missing.inv3")
