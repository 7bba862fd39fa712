"""Phantoms: procedural (Shepp-Logan, random ellipsoid heads with lesions) and real anatomy from packaged scans.

Real anatomy (shared/DATA.md): the MNI152 2009a T1 template and grey/white-matter maps bundled with nilearn, the
Colin27 (ch2) T1 and its AAL atlas from Debian ``mricron-data``, and a head CT from Debian ``invesalius-examples``.
Every loader also takes a local path. NIfTI volumes come back reoriented to RAS (array axes = +x right, +y anterior,
+z superior) with their spacing in mm; oblique volumes, NaN voxels and bad spacings are clear errors.
"""

from __future__ import annotations

import plistlib
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scarce.errors import DataError, check_range

MRICRON = Path("/usr/share/mricron/templates")
INVESALIUS = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
MNI152_FILES = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
                "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}
# AAL (Tzourio-Mazoyer et al. 2002) regions grouped into a few classes: 71-78 caudate, putamen, pallidum, thalamus;
# 91-116 cerebellum and vermis; every other region (1-90) is cerebral cortex (incl. hippocampus and amygdala).
AAL_CLASSES = ("background", "cortex", "deep_grey", "cerebellum")
# Procedural head tissues, in the order of the fraction channels (matches physics.mri.TISSUES)
HEAD_TISSUES = ("csf", "gm", "wm", "fat")
HEAD_CLASSES = ("background", "csf", "gm", "wm", "fat", "lesion")


@dataclass
class Volume:
    """A 3D scan: data (X, Y, Z) in its array order, spacing (3,) mm, affine (4, 4) voxel -> world mm."""

    data: np.ndarray
    spacing_mm: tuple[float, float, float]
    affine: np.ndarray
    source: str = ""


# --------------------------------------------------------------------------------------------- procedural phantoms
def _grid(shape: tuple[int, ...], device=None) -> list[torch.Tensor]:
    """Normalised coordinates in [-1, 1] per axis, broadcastable over ``shape``."""
    out = []
    for i, n in enumerate(shape):
        view = [1] * len(shape)
        view[i] = n
        out.append(torch.linspace(-1, 1, n, device=device).view(view))
    return out


def ellipsoid(shape: tuple[int, ...], centre, radii, angle_rad: float = 0.0, device=None) -> torch.Tensor:
    """Bool mask of an ellipse / ellipsoid in normalised coordinates; ``angle_rad`` rotates the first two axes."""
    g = _grid(shape, device)
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    d = [g[i] - centre[i] for i in range(len(shape))]
    d0, d1 = c * d[0] + s * d[1], -s * d[0] + c * d[1]
    d = [d0, d1] + d[2:]
    return sum((di / ri) ** 2 for di, ri in zip(d, radii)) <= 1


# Modified Shepp-Logan (Toft 1996): (intensity, a, b, x0, y0, angle in degrees); x along columns, y up
_SHEPP_LOGAN = [(1.0, .69, .92, 0, 0, 0), (-.8, .6624, .874, 0, -.0184, 0), (-.2, .11, .31, .22, 0, -18),
                (-.2, .16, .41, -.22, 0, 18), (.1, .21, .25, 0, .35, 0), (.1, .046, .046, 0, .1, 0),
                (.1, .046, .046, 0, -.1, 0), (.1, .046, .023, -.08, -.605, 0), (.1, .023, .023, 0, -.606, 0),
                (.1, .023, .046, .06, -.605, 0)]


def shepp_logan(n: int, device=None) -> torch.Tensor:
    """(n, n) modified Shepp-Logan phantom, intensities in [0, 1], row 0 at the top."""
    check_range("n", n, 2, integer=True)
    y = torch.linspace(1, -1, n, device=device)[:, None]
    x = torch.linspace(-1, 1, n, device=device)[None, :]
    img = torch.zeros(n, n, device=device)
    for val, a, b, x0, y0, ang in _SHEPP_LOGAN:
        t = np.deg2rad(ang)
        xr = (x - x0) * np.cos(t) + (y - y0) * np.sin(t)
        yr = -(x - x0) * np.sin(t) + (y - y0) * np.cos(t)
        img = img + val * ((xr / a) ** 2 + (yr / b) ** 2 <= 1)
    return img.clamp(0, 1)


def random_head(shape: tuple[int, ...], generator: torch.Generator | None = None, n_lesions: int = 2,
                device=None) -> dict[str, torch.Tensor]:
    """A random ellipsoid head (2D or 3D): scalp fat, CSF rim, grey-matter shell, white matter, ventricles, lesions.

    Returns {"fractions": (4, *shape) float (csf, gm, wm, fat), "labels": (*shape) int64 in HEAD_CLASSES order,
    "hu": (*shape) float CT numbers (fat -100, CSF 15, GM 40, WM 30, lesion 60, skull 1200, air -1000)}.
    Lesions are white-matter hyperintense-on-T2 blobs: they take CSF-like relaxation (oedema) and label 5."""
    r = lambda lo, hi: lo + (hi - lo) * float(torch.rand((), generator=generator))
    nd = len(shape)
    scale = [r(0.85, 0.95) for _ in range(nd)]
    centre = [r(-0.03, 0.03) for _ in range(nd)]
    ang = r(-0.2, 0.2)
    shell = lambda k: ellipsoid(shape, centre, [s * k for s in scale], ang, device)
    head, skull_in, brain, gm_in = shell(1.0), shell(0.9), shell(0.84), shell(0.74)
    vent = ellipsoid(shape, centre, [s * r(0.12, 0.2) for s in scale[:1]] + [s * r(0.25, 0.35) for s in scale[1:]],
                     ang, device)
    labels = torch.zeros(shape, dtype=torch.long, device=device)
    labels[head] = 4  # scalp and marrow fat
    labels[skull_in] = 1  # CSF between skull and brain
    labels[brain] = 2
    labels[gm_in] = 3
    labels[vent] = 1
    for _ in range(n_lesions):
        c = [ci + r(-0.4, 0.4) * s for ci, s in zip(centre, scale)]
        les = ellipsoid(shape, c, [r(0.04, 0.1)] * nd, 0.0, device) & gm_in & ~vent
        labels[les] = 5
    skull = head & ~skull_in & ~shell(0.95)
    fractions = torch.zeros((4, *shape), device=device)
    for k, lab in enumerate((1, 2, 3, 4)):
        fractions[k] = (labels == lab).float()
    fractions[0] += (labels == 5).float()
    fractions[:, skull] = 0  # cortical bone gives no MR signal
    hu = torch.full(shape, -1000.0, device=device)
    for lab, v in ((1, 15.0), (2, 40.0), (3, 30.0), (4, -100.0), (5, 60.0)):
        hu[labels == lab] = v
    hu[skull] = 1200.0
    return {"fractions": fractions, "labels": labels, "hu": hu}


# --------------------------------------------------------------------------------------------------- real scans
def check_volume(data: np.ndarray, spacing, key: str) -> None:
    """A clear error for NaN/inf voxels, a non-3D array or a non-positive spacing."""
    if data.ndim != 3:
        raise DataError(f"{key}: expected a 3D volume; got shape {data.shape}")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise DataError(f"{key}: {bad} voxels are NaN or infinite")
    sp = np.asarray(spacing, dtype=float)
    if sp.shape != (3,) or not np.isfinite(sp).all() or (sp <= 0).any():
        raise DataError(f"{key}: voxel spacing {sp.tolist()} mm is not allowed; expected three positive values")


def load_nifti(path: str | Path, key: str = "path", spacing_mm: tuple[float, float, float] | None = None,
               tol_mm: float = 1e-3) -> Volume:
    """A NIfTI volume reoriented to RAS, float32; ``spacing_mm`` (if given) must match within ``tol_mm``.

    Oblique volumes (axes not aligned with the world axes) are refused: resample them to an axis-aligned grid."""
    import nibabel as nib

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{key}={str(path)!r}: no such file")
    try:
        img = nib.load(str(p))
    except Exception as e:  # noqa: BLE001 - nibabel raises several types for a file it cannot read
        raise DataError(f"{key}={str(path)!r} is not a NIfTI file nibabel can read: {e}") from e
    if len(img.shape) != 3:
        raise DataError(f"{key}={str(path)!r}: expected a 3D volume; got shape {img.shape}")
    rot = img.affine[:3, :3]
    zooms = np.linalg.norm(rot, axis=0)
    if (zooms <= 0).any() or not np.isfinite(zooms).all():
        raise DataError(f"{key}={str(path)!r}: voxel spacing {zooms.tolist()} mm is not allowed")
    direction = rot / zooms
    if np.abs(np.abs(direction).max(0) - 1).max() > 1e-3:
        raise DataError(f"{key}={str(path)!r}: the volume is oblique (affine {np.round(rot, 3).tolist()}); "
                        "expected axes aligned with the world (RAS/LPS permutations and flips are fine)")
    canon = nib.as_closest_canonical(img)
    data = np.asarray(canon.dataobj, dtype=np.float32)
    spacing = tuple(float(z) for z in np.linalg.norm(canon.affine[:3, :3], axis=0))
    check_volume(data, spacing, f"{key}={str(path)!r}")
    if spacing_mm is not None and np.abs(np.asarray(spacing) - np.asarray(spacing_mm)).max() > tol_mm:
        raise DataError(f"{key}={str(path)!r}: voxel spacing {spacing} mm; expected {tuple(spacing_mm)} mm")
    return Volume(data, spacing, canon.affine.copy(), str(p))


def nilearn_data_dir() -> Path:
    """The folder of nilearn's bundled data files (MNI152 template and tissue maps), without importing nilearn."""
    import importlib.util

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the nilearn package is not installed; it carries the MNI152 template (pip install nilearn)")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def load_mni152(root: str | Path | None = None) -> dict[str, Volume]:
    """MNI152 2009a (1 mm): {"t1": template, "gm", "wm": tissue probabilities in [0, 1]} from ``root`` (default:
    nilearn's bundled files, same file names)."""
    base = Path(root) if root is not None else nilearn_data_dir()
    out = {k: load_nifti(base / f, key=f"mni152.{k}") for k, f in MNI152_FILES.items()}
    for k in ("gm", "wm"):
        v = out[k].data
        out[k].data = v / 255.0 if v.max() > 1.0 else v  # nilearn ships them as uint8 0..255
    shapes = {k: v.data.shape for k, v in out.items()}
    if len(set(shapes.values())) != 1:
        raise DataError(f"mni152: the T1 and tissue maps have different grids {shapes}")
    return out


def brain_tissues(gm: np.ndarray, wm: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(3, X, Y, Z) csf/gm/wm fractions and the brain mask from GM/WM probability maps.

    The brain mask is GM + WM > threshold with holes filled (slice by slice and in 3D), so the ventricles and sulci
    inside it count as brain; CSF is what GM and WM leave of each brain voxel."""
    from scipy import ndimage

    mask = ndimage.binary_closing((gm + wm) > threshold, iterations=2)
    mask = ndimage.binary_fill_holes(mask)
    for z in range(mask.shape[2]):
        mask[..., z] = ndimage.binary_fill_holes(mask[..., z])
    if not mask.any():
        raise DataError("brain_tissues: the grey/white-matter maps leave an empty brain mask")
    total = np.clip(gm + wm, 0, 1)
    scale = np.where(gm + wm > 1, 1 / np.maximum(gm + wm, 1e-6), 1.0)
    csf = np.where(mask, 1 - total, 0.0)
    fr = np.stack([csf, gm * scale * mask, wm * scale * mask]).astype(np.float32)
    return fr, mask


def load_colin27(root: str | Path = MRICRON, brain_only: bool = True) -> dict[str, Volume]:
    """Colin27 (ch2) T1 and the AAL atlas on the same 1 mm grid: {"t1", "aal"} from ``root`` (mricron-data).

    brain_only: the skull-stripped ``ch2bet.nii.gz`` (what a simulated brain without skull is compared with)."""
    base = Path(root)
    t1 = load_nifti(base / ("ch2bet.nii.gz" if brain_only else "ch2.nii.gz"), key="colin27.t1")
    aal = load_nifti(base / "aal.nii.gz", key="colin27.aal")
    if t1.data.shape != aal.data.shape or not np.allclose(t1.affine, aal.affine, atol=1e-3):
        raise DataError(f"colin27: T1 {t1.data.shape} and AAL {aal.data.shape} are not on the same grid")
    aal.data = np.rint(aal.data).astype(np.int64)
    return {"t1": t1, "aal": aal}


def group_aal(aal: np.ndarray) -> np.ndarray:
    """AAL region numbers -> AAL_CLASSES indices (0 background, 1 cortex, 2 deep grey, 3 cerebellum)."""
    a = np.asarray(aal).astype(np.int64)
    out = np.zeros_like(a)
    out[(a >= 1) & (a <= 90)] = 1
    out[(a >= 71) & (a <= 78)] = 2
    out[(a >= 91) & (a <= 116)] = 3
    return out


def resample(volume: Volume, target_affine: np.ndarray, target_shape: tuple[int, int, int], order: int = 0,
             cval: float = 0.0) -> np.ndarray:
    """``volume`` on another voxel grid (world mm through both affines): order 0 nearest (labels), 1 linear."""
    from scipy import ndimage

    vox = np.linalg.inv(volume.affine) @ np.asarray(target_affine)  # target voxel -> source voxel
    return ndimage.affine_transform(volume.data, vox[:3, :3], offset=vox[:3, 3], output_shape=tuple(target_shape),
                                    order=order, mode="constant", cval=cval)


def load_invesalius(path: str | Path = INVESALIUS) -> dict[str, Volume | list[np.ndarray]]:
    """A CT from an InVesalius project (.inv3, a tar.gz): {"hu": Volume (X, Y, Z) int16 HU as float32,
    "masks": [bool (X, Y, Z), ...]} with array axes (column, row, slice) and the project's spacing in mm.

    The project stores ``matrix.dat`` as raw (slices, rows, columns) int16 described by ``main.plist``; masks are
    uint8 with one extra leading index on every axis, which is dropped."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"ct path={str(path)!r}: no such file (Debian: apt-get install invesalius-examples)")
    try:
        with tarfile.open(p, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            if "main.plist" not in members:
                raise DataError(f"ct path={str(path)!r}: no main.plist inside; not an InVesalius project")
            main = plistlib.loads(tar.extractfile(members["main.plist"]).read())
            mat = main.get("matrix", {})
            shape, spacing = tuple(int(v) for v in mat.get("shape", ())), tuple(float(v) for v in main.get("spacing", ()))
            name = mat.get("filename", "matrix.dat")
            if len(shape) != 3 or name not in members:
                raise DataError(f"ct path={str(path)!r}: main.plist names matrix {name!r} of shape {shape}")
            raw = np.frombuffer(tar.extractfile(members[name]).read(), dtype=np.dtype(mat.get("dtype", "int16")).newbyteorder("<"))
            if raw.size != int(np.prod(shape)):
                raise DataError(f"ct path={str(path)!r}: {name} holds {raw.size} values; main.plist says {shape}")
            masks = []
            for key in sorted(main.get("masks", {})):
                info = plistlib.loads(tar.extractfile(members[main["masks"][key]]).read())
                mshape = tuple(int(v) for v in info["mask_shape"])
                m = np.frombuffer(tar.extractfile(members[info["mask_file"]]).read(), np.uint8).reshape(mshape)
                masks.append(np.ascontiguousarray((m[1:, 1:, 1:] >= 127).transpose(2, 1, 0)))
    except (tarfile.TarError, OSError, plistlib.InvalidFileException) as e:
        raise DataError(f"ct path={str(path)!r} is not a readable InVesalius project: {e}") from e
    data = np.ascontiguousarray(raw.reshape(shape).transpose(2, 1, 0)).astype(np.float32)  # (z,y,x) -> (x,y,z)
    if len(spacing) != 3:
        raise DataError(f"ct path={str(path)!r}: main.plist spacing {spacing} is not three values")
    check_volume(data, spacing, f"ct path={str(path)!r}")
    affine = np.diag([*spacing, 1.0])
    return {"hu": Volume(data, spacing, affine, str(p)), "masks": [m for m in masks if m.shape == data.shape]}


def downsample(x: np.ndarray, factor: int) -> np.ndarray:
    """Block mean over ``factor``^3 voxels (crops the remainder): a fast, anti-aliased shrink of a volume."""
    check_range("factor", factor, 1, integer=True)
    s = [n // factor * factor for n in x.shape[-3:]]
    x = x[..., : s[0], : s[1], : s[2]]
    lead = x.shape[:-3]
    return x.reshape(*lead, s[0] // factor, factor, s[1] // factor, factor, s[2] // factor, factor).mean((-5, -3, -1))
