"""Image sources: one class per on-disk format, each built by Hydra (``_target_``) and read into an :class:`ImageSet`.

Every source has ``read() -> ImageSet`` and ``describe() -> str``. Pixels come back as stored (uint8 / uint16), or
as float32 in [0, 1] for scanner formats (NIfTI, DICOM) whose raw values have no fixed range and are windowed
per volume / per image. Sources that slice volumes record the volume of each image in ``meta["groups"]`` so the
datamodule can keep all slices of one volume (patient) in one split.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.image_set import ImageSet
from scarce.errors import ConfigError, DataError, check_range

log = logging.getLogger(__name__)
KEY = "datamodule.source"  # where a source sits in the config; error messages name its keys from here
SPLITS = ("train", "val", "test")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]


# ------------------------------------------------------------------------------------------------- shared helpers
def as_size(size: int | Sequence[int] | None, key: str) -> tuple[int, int] | None:
    """A size option (an int for a square, or [height, width]) as (H, W) pixels, or None."""
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in hw):
        raise ConfigError(f"{key}={size!r} is not allowed; expected a positive integer or [height, width]")
    return hw


def resize_nchw(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) float -> (N, C, *size), bilinear with antialiasing (so downsizing does not alias)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def resize_hwc(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) image -> (*size, C) in the same dtype (integers rounded and clipped to their range)."""
    if img.shape[:2] == tuple(size):
        return img
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    out = resize_nchw(x, size)[0].permute(1, 2, 0).numpy()
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(img.dtype)


def percentile_window(x: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Any-shape array -> float32 in [0, 1], mapping the (low, high) percentiles to 0 and 1 (a constant image -> 0)."""
    lo, hi = np.percentile(x, window)
    if hi <= lo:
        return np.zeros(x.shape, np.float32)
    return np.clip((x.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def as_window(window: Sequence[float], key: str) -> tuple[float, float]:
    """A (low, high) percentile pair, 0 <= low < high <= 100."""
    w = tuple(float(v) for v in window)
    if len(w) != 2 or not 0.0 <= w[0] < w[1] <= 100.0:
        raise ConfigError(f"{key}={list(window)!r} is not allowed; expected [low, high] percentiles, 0 <= low < high"
                          " <= 100")
    return w


def class_files(root: str | Path, suffixes: Sequence[str], key: str) -> list[tuple[str, list[Path]]]:
    """(class name, sorted files) per subfolder of ``root`` (searched recursively), classes sorted by name.

    A class folder with no matching file is skipped with a warning; no usable class at all is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{key}.root={str(root)!r}: no such folder")
    suffixes = tuple(s.lower() if s.startswith(".") else "." + s.lower() for s in suffixes)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{key}.root={str(root)!r} has no class folders; expected one subfolder per class holding "
                        f"files of type {list(suffixes)}")
    out = []
    for folder in folders:
        files = sorted(p for p in folder.rglob("*")
                       if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(suffixes))
        if files:
            out.append((folder.name, files))
        else:
            log.warning("%s.root: class folder %s holds no %s files; skipped", key, folder, list(suffixes))
    if not out:
        raise DataError(f"{key}.root={str(root)!r}: no class folder holds files of type {list(suffixes)}")
    return out


def stack_images(images: list[np.ndarray], names: list[str], size: tuple[int, int] | None, key: str) -> np.ndarray:
    """(H, W, C) images of one dtype -> (N, H, W, C); resized to ``size`` if given; gray broadcast to RGB if mixed."""
    if not images:
        raise DataError(f"{key}: no images were read")
    for img, name in zip(images, names):
        if img.dtype != images[0].dtype:
            raise DataError(f"{key}: {names[0]} is {images[0].dtype} but {name} is {img.dtype}; store all images "
                            "with the same bit depth")
    if size is not None:
        images = [resize_hwc(img, size) for img in images]
    else:
        for img, name in zip(images, names):
            if img.shape[:2] != images[0].shape[:2]:
                (h0, w0), (h, w) = images[0].shape[:2], img.shape[:2]
                raise DataError(f"{key}: images differ in size ({names[0]} is {h0}x{w0}, {name} is {h}x{w}); set "
                                f"{key}.size to resize them on read")
    if any(img.shape[2] == 3 for img in images):
        images = [np.broadcast_to(img, img.shape[:2] + (3,)) if img.shape[2] == 1 else img for img in images]
    return np.stack(images)


def image_set(images: list[np.ndarray], labels: list[int], names: list[str], classes: list[str],
              size: tuple[int, int] | None, key: str, source: str, groups: list[int] | None = None) -> ImageSet:
    """Stack per-file images read from class folders into an ImageSet (no split of its own)."""
    meta: dict[str, Any] = {"files": names}
    if groups is not None:
        meta["groups"] = np.asarray(groups, np.int64)
    return ImageSet(stack_images(images, names, size, key), np.asarray(labels, np.int64), classes, None, source, meta)


def check_finite(x: np.ndarray, name: str, key: str) -> None:
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise DataError(f"{key}: {name} has {bad} NaN or infinite values")


# ---------------------------------------------------------------------------------------------------------- .npz
class NpzSource:
    """MedMNIST-format .npz: ``{train,val,test}_images`` (N, H, W[, C]) and ``{split}_labels`` (N,), (N, 1) or (N, K).

    ``train_*`` is required, val/test optional. (N, K>1) labels are multi-label (ChestMNIST). Float images must lie
    in [0, 1]. A ``classes`` key in the file (our synthetic files write one) names the classes, unless given here.
    """

    def __init__(self, path: str, classes: Sequence[str] | None = None):
        self.path = str(path)
        self.classes = list(classes) if classes is not None else None

    def describe(self) -> str:
        return f"npz:{self.path}"

    def read(self) -> ImageSet:
        p = Path(self.path)
        if not p.is_file():
            raise DataError(f"{KEY}.path={self.path!r}: no such file")
        try:
            z = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{KEY}.path={self.path!r} could not be read as .npz: {e}") from e
        with z:
            keys = sorted(z.files)
            present = [s for s in SPLITS if f"{s}_images" in z.files or f"{s}_labels" in z.files]
            if "train" not in present:
                present = ["train"] + present
            parts = []
            for split in present:
                for what in ("images", "labels"):
                    if f"{split}_{what}" not in z.files:
                        raise DataError(f"{KEY}.path={self.path!r} has no key {split}_{what!s}; its keys are {keys}")
                parts.append((split, z[f"{split}_images"], z[f"{split}_labels"]))
            file_classes = [str(c) for c in z["classes"]] if "classes" in z.files else None
        images, labels = [], []
        for split, x, y in parts:
            images.append(self._images(x, split))
            labels.append(self._labels(y, split, len(x)))
        shapes = {im.shape[1:] for im in images}
        if len(shapes) > 1:
            raise DataError(f"{KEY}.path={self.path!r}: the splits hold images of different shapes {sorted(shapes)}")
        if len({lab.ndim for lab in labels}) > 1 or len({lab.shape[1:] for lab in labels}) > 1:
            raise DataError(f"{KEY}.path={self.path!r}: the splits' labels differ in shape "
                            f"{[lab.shape[1:] for lab in labels]}")
        y = np.concatenate(labels)
        n_classes = y.shape[1] if y.ndim == 2 else int(y.max()) + 1 if len(y) else 0
        classes = self.classes or file_classes or [str(i) for i in range(n_classes)]
        if len(classes) < n_classes or (y.ndim == 2 and len(classes) != n_classes):
            source = f"{KEY}.classes" if self.classes else f"the 'classes' key of {self.path!r}"
            raise DataError(f"{source} names {len(classes)} classes but the labels have {n_classes}")
        split = np.concatenate([np.full(len(x), s) for (s, x, _) in parts])
        return ImageSet(np.concatenate(images), y, list(classes), split, self.describe(), {"path": self.path})

    def _images(self, x: np.ndarray, split: str) -> np.ndarray:
        name = f"{self.path}:{split}_images"
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[3] not in (1, 3):
            raise DataError(f"{KEY}: {name} has shape {x.shape}; expected (N, H, W), (N, H, W, 1) or (N, H, W, 3)")
        if x.dtype in (np.uint8, np.uint16):
            return x
        if np.issubdtype(x.dtype, np.floating):
            check_finite(x, name, KEY)
            if x.size and (x.min() < 0 or x.max() > 1):
                raise DataError(f"{KEY}: {name} is {x.dtype} with values in [{x.min():g}, {x.max():g}]; float "
                                "images must lie in [0, 1] (or store uint8 / uint16)")
            return x.astype(np.float32)
        raise DataError(f"{KEY}: {name} has dtype {x.dtype}; expected uint8, uint16 or float in [0, 1]")

    def _labels(self, y: np.ndarray, split: str, n: int) -> np.ndarray:
        name = f"{self.path}:{split}_labels"
        if len(y) != n:
            raise DataError(f"{KEY}: {name} has {len(y)} rows but {split}_images has {n} images")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim not in (1, 2) or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)
                                        or np.all(np.mod(y, 1) == 0)):
            raise DataError(f"{KEY}: {name} has shape {y.shape} and dtype {y.dtype}; expected integer class indices "
                            "(N,) / (N, 1) or a (N, K) 0/1 multi-label matrix")
        y = y.astype(np.int64)
        if y.size and y.min() < 0:
            raise DataError(f"{KEY}: {name} holds negative labels (min {y.min()})")
        if y.ndim == 2 and y.size and y.max() > 1:
            raise DataError(f"{KEY}: {name} is a (N, {y.shape[1]}) multi-label matrix but holds values other than 0/1")
        return y


# ---------------------------------------------------------------------------------------------------------- idx
IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format, plain or .gz) as an array; bad magic or a short file is a DataError."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # a truncated or non-gzip .gz
        raise DataError(f"{KEY}: {path} could not be read: {e}") from e
    # header: two zero bytes, a dtype code, the number of dims, then each dim as big-endian int32
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{KEY}: {path} is not an idx file (bad magic number {raw[:4].hex() or 'none'})")
    ndim, dtype = raw[3], IDX_DTYPES[raw[2]]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DataError(f"{KEY}: {path} is truncated (its header needs {head} bytes, the file has {len(raw)})")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, 4))
    need = head + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != need:
        raise DataError(f"{KEY}: {path} is {'truncated' if len(raw) < need else 'too long'}: shape {shape} needs "
                        f"{need} bytes, the file has {len(raw)}")
    return np.frombuffer(raw, dtype, offset=head).reshape(shape).astype(dtype.newbyteorder("="))


class IdxSource:
    """MNIST / Fashion-MNIST idx files in a folder (``train-images-idx3-ubyte[.gz]``, ``t10k-...``): train and test.

    Without ``classes``, a folder whose path mentions "fashion" gets Fashion-MNIST's 10 names, any other "0".."9".
    """

    PREFIX: ClassVar[dict[str, str]] = {"train": "train", "test": "t10k"}

    def __init__(self, root: str, classes: Sequence[str] | None = None):
        self.root = str(root)
        self.classes = list(classes) if classes is not None else None

    def describe(self) -> str:
        return f"idx:{self.root}"

    def _file(self, split: str, what: str) -> Path | None:
        root = Path(self.root)
        kind = "images-idx3-ubyte" if what == "images" else "labels-idx1-ubyte"
        # both the original names and the dotted ones some mirrors use (train-images.idx3-ubyte)
        for stem in (f"{self.PREFIX[split]}-{kind}", f"{self.PREFIX[split]}-{kind.replace('-idx', '.idx')}"):
            for name in (stem, stem + ".gz"):
                if (root / name).is_file():
                    return root / name
        return None

    def read(self) -> ImageSet:
        root = Path(self.root)
        if not root.is_dir():
            raise DataError(f"{KEY}.root={self.root!r}: no such folder")
        images, labels, split = [], [], []
        for s in ("train", "test"):
            fx, fy = self._file(s, "images"), self._file(s, "labels")
            if fx is None or fy is None:
                if s == "test" and fx is None and fy is None:
                    continue  # a train-only folder is usable; the datamodule draws its own test split
                found = sorted(p.name for p in root.iterdir())
                missing = f"{self.PREFIX[s]}-{'images-idx3' if fx is None else 'labels-idx1'}-ubyte[.gz]"
                raise DataError(f"{KEY}.root={self.root!r} has no {missing}; it holds {found}")
            x, y = read_idx(fx), read_idx(fy)
            if x.ndim != 3 or y.ndim != 1:
                raise DataError(f"{KEY}: {fx} / {fy} have shapes {x.shape} / {y.shape}; expected (N, H, W) / (N,)")
            if len(x) != len(y):
                raise DataError(f"{KEY}: {fx} holds {len(x)} images but {fy} holds {len(y)} labels")
            images.append(x.astype(np.uint8) if x.dtype == np.uint8 else x)
            labels.append(y.astype(np.int64))
            split.append(np.full(len(x), s))
        y = np.concatenate(labels)
        classes = self.classes or (FASHION_MNIST_CLASSES if "fashion" in str(root.resolve()).lower()
                                   else [str(i) for i in range(max(10, int(y.max()) + 1))])
        if int(y.max()) >= len(classes):
            raise DataError(f"{KEY}.classes names {len(classes)} classes but the labels go up to {int(y.max())}")
        return ImageSet(np.concatenate(images)[..., None], y, list(classes), np.concatenate(split), self.describe(),
                        {"root": self.root})


# ------------------------------------------------------------------------------------------------------ digits
class DigitsSource:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, classes "0".."9"), no split of its own."""

    def describe(self) -> str:
        return "sklearn-digits"

    def read(self) -> ImageSet:
        from sklearn.datasets import load_digits

        d = load_digits()
        images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # stored as 0..16
        return ImageSet(images, d.target.astype(np.int64), [str(i) for i in range(10)], None, self.describe())


# ------------------------------------------------------------------------------------------------------ folders
class FolderSource:
    """Class-per-folder image files read with Pillow.

    Modes: 1/L/LA -> gray; P/RGB/CMYK/YCbCr -> RGB; RGBA (and palette images with transparency) are composited on
    black, so transparent background reads as the dark background of most medical images; I;16* and I -> uint16.
    All-gray folders give C=1; any colour image makes the set C=3 (gray images broadcast).
    """

    def __init__(self, root: str, extensions: Sequence[str] = ("png", "jpg", "jpeg", "bmp", "tif", "tiff"),
                 size: int | Sequence[int] | None = None):
        self.root = str(root)
        self.extensions = tuple(extensions)
        self.size = as_size(size, f"{KEY}.size")

    def describe(self) -> str:
        size = "" if self.size is None else f" size={self.size[0]}x{self.size[1]}"
        return f"folder:{self.root}{size}"

    def read(self) -> ImageSet:
        classes, images, labels, names = [], [], [], []
        for c, (name, files) in enumerate(class_files(self.root, self.extensions, KEY)):
            classes.append(name)
            for f in files:
                images.append(self.load(f))
                labels.append(c)
                names.append(str(f))
        return image_set(images, labels, names, classes, self.size, KEY, self.describe())

    @staticmethod
    def load(path: Path) -> np.ndarray:
        """One image file -> (H, W, C) uint8 or uint16, C in {1, 3}."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im.load()
                return FolderSource._pixels(im, path)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:  # Pillow's ways of saying "corrupt"
            raise DataError(f"{KEY}: {path} could not be read as an image: {e}") from e

    @staticmethod
    def _pixels(im: Any, path: Path) -> np.ndarray:
        mode = im.mode
        if mode == "P":
            im, mode = (im.convert("RGBA"), "RGBA") if "transparency" in im.info else (im.convert("RGB"), "RGB")
        if mode in ("1", "LA"):
            im, mode = im.convert("L"), "L"
        if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im, mode = im.convert("RGB"), "RGB"
        if mode == "L":
            return np.asarray(im, np.uint8)[..., None]
        if mode == "RGB":
            return np.asarray(im, np.uint8)
        if mode == "RGBA":
            a = np.asarray(im, np.float32)
            return np.rint(a[..., :3] * (a[..., 3:] / 255.0)).astype(np.uint8)  # alpha-composite onto black
        if mode.startswith("I;16") or mode == "I":
            a = np.asarray(im)
            if a.size and (a.min() < 0 or a.max() > 65535):
                raise DataError(f"{KEY}: {path} is a 32-bit integer image with values in [{a.min()}, {a.max()}]; "
                                "only 0..65535 is supported")
            return a.astype(np.uint16)[..., None]
        raise DataError(f"{KEY}: {path} has image mode {mode!r}; supported modes are 1, L, LA, P, RGB, RGBA, CMYK, "
                        "YCbCr, I;16 and I")


# -------------------------------------------------------------------------------------------------------- NIfTI
class NiftiSource:
    """Class-per-folder .nii / .nii.gz volumes, sliced to 2D along ``axis`` and windowed per volume to [0, 1].

    Keeps the central ``slice_fraction`` of the slices (the edges of a scan are mostly empty) and skips all-zero
    slices; the ``window`` percentiles of each volume map to 0 and 1. Slices of one volume share a group.
    """

    def __init__(self, root: str, axis: int = 2, slice_fraction: float = 0.6,
                 window: Sequence[float] = (0.5, 99.5), size: int | Sequence[int] | None = None):
        self.root = str(root)
        self.axis = check_range(f"{KEY}.axis", axis, 0, 2, integer=True)
        self.slice_fraction = check_range(f"{KEY}.slice_fraction", slice_fraction, 0.0, 1.0, low_inclusive=False)
        self.window = as_window(window, f"{KEY}.window")
        self.size = as_size(size, f"{KEY}.size")

    def describe(self) -> str:
        size = "" if self.size is None else f" size={self.size[0]}x{self.size[1]}"
        return (f"nifti:{self.root} axis={self.axis} slice_fraction={self.slice_fraction} "
                f"window={list(self.window)}{size}")

    def read(self) -> ImageSet:
        classes, images, labels, names, groups = [], [], [], [], []
        volume = 0
        for c, (name, files) in enumerate(class_files(self.root, (".nii", ".nii.gz"), KEY)):
            classes.append(name)
            for f in files:
                for k, sl in self.slices(f):
                    images.append(sl[..., None])
                    labels.append(c)
                    names.append(f"{f}[slice {k}]")
                    groups.append(volume)
                volume += 1
        if not images:
            raise DataError(f"{KEY}.root={self.root!r}: every volume is empty (all-zero slices)")
        return image_set(images, labels, names, classes, self.size, KEY, self.describe(), groups)

    def slices(self, path: Path) -> list[tuple[int, np.ndarray]]:
        """(slice index, (H, W) float32 in [0, 1]) for the kept slices of one volume."""
        import nibabel as nib

        try:
            vol = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
        except Exception as e:  # nibabel raises many types (ImageFileError, EOFError, zlib.error) for a bad file
            raise DataError(f"{KEY}: {path} could not be read as NIfTI: {e}") from e
        while vol.ndim > 3 and vol.shape[-1] == 1:  # (X, Y, Z, 1): a 4D header around a 3D volume
            vol = vol[..., 0]
        if vol.ndim != 3:
            raise DataError(f"{KEY}: {path} has shape {vol.shape}; expected a 3D volume (or 4D with one volume)")
        check_finite(vol, str(path), KEY)
        n = vol.shape[self.axis]
        keep = max(1, round(n * self.slice_fraction))
        start = (n - keep) // 2
        win = percentile_window(vol, self.window)
        out = []
        for k in range(start, start + keep):
            if np.any(np.take(vol, k, axis=self.axis)):
                out.append((k, np.ascontiguousarray(np.take(win, k, axis=self.axis))))
        return out


# -------------------------------------------------------------------------------------------------------- DICOM
class DicomSource:
    """Class-per-folder single-frame DICOM files: rescale slope/intercept applied, windowed per image to [0, 1].

    MONOCHROME1 (bright = low value) is inverted so every image reads bright = dense. Files of one PatientID share
    a group (so a patient never straddles splits); files without one are their own group.
    """

    def __init__(self, root: str, size: int | Sequence[int] | None = None, window: Sequence[float] = (0.5, 99.5),
                 extensions: Sequence[str] = ("dcm",)):
        self.root = str(root)
        self.size = as_size(size, f"{KEY}.size")
        self.window = as_window(window, f"{KEY}.window")
        self.extensions = tuple(extensions)

    def describe(self) -> str:
        size = "" if self.size is None else f" size={self.size[0]}x{self.size[1]}"
        return f"dicom:{self.root} window={list(self.window)}{size}"

    def read(self) -> ImageSet:
        classes, images, labels, names, groups = [], [], [], [], []
        patients: dict[str, int] = {}
        for c, (name, files) in enumerate(class_files(self.root, self.extensions, KEY)):
            classes.append(name)
            for f in files:
                img, patient = self.load(f)
                images.append(img)
                labels.append(c)
                names.append(str(f))
                groups.append(patients.setdefault(patient or f"file:{f}", len(patients)))
        return image_set(images, labels, names, classes, self.size, KEY, self.describe(), groups)

    def load(self, path: Path) -> tuple[np.ndarray, str]:
        """One DICOM file -> ((H, W, C) float32 in [0, 1], PatientID or "")."""
        import pydicom
        from pydicom.errors import InvalidDicomError

        try:
            ds = pydicom.dcmread(path)
            px = ds.pixel_array.astype(np.float32)
        except (InvalidDicomError, AttributeError, ValueError, OSError, RuntimeError, KeyError) as e:
            raise DataError(f"{KEY}: {path} could not be read as a DICOM image: {e}") from e
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        if frames > 1 or px.ndim != (3 if samples > 1 else 2):
            raise DataError(f"{KEY}: {path} holds pixel data of shape {px.shape} ({frames} frames, {samples} samples"
                            " per pixel); expected one 2D frame, gray or RGB")
        px = px * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
        check_finite(px, str(path), KEY)
        img = percentile_window(px, self.window)
        if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            img = 1.0 - img
        return (img[..., None] if img.ndim == 2 else img), str(ds.get("PatientID", "") or "")
