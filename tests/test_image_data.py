"""Image sources and the image datamodule, on small real files written to tmp_path (and the real Fashion-MNIST)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from image_files import (
    RNG,
    nifti,
    png_folder,
    write_dicom,
    write_idx,
    write_idx_folder,
    write_npz,
)
from PIL import Image

from datamodules.image_readers import (
    FASHION_MNIST_CLASSES,
    DicomSource,
    DigitsSource,
    FolderSource,
    IdxSource,
    NiftiSource,
    NpzSource,
)
from datamodules.image_set import IMAGE, LABEL, ImageSet
from datamodules.images import SPLIT_FILE, ImageDataModule
from scarce.errors import ConfigError, DataError

FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_npz_gray_keeps_its_splits_and_class_names(tmp_path):
    path = write_npz(tmp_path / "g.npz", shape=(8, 8), classes=["a", "b", "c"])
    s = NpzSource(str(path)).read()
    assert s.images.shape == (46, 8, 8, 1) and s.images.dtype == np.uint8
    assert s.labels.shape == (46,) and s.labels.dtype == np.int64 and s.classes == ["a", "b", "c"]
    assert [int((s.split == k).sum()) for k in ("train", "val", "test")] == [30, 6, 10]
    with np.load(path) as z:
        np.testing.assert_array_equal(s.images[s.split == "test", ..., 0], z["test_images"])
    dm = ImageDataModule(NpzSource(str(path)), batch_size=4)
    dm.setup()
    assert [len(dm.real(k)[0]) for k in ("train", "val", "test")] == [30, 6, 10]  # the file's own splits
    x, _ = dm.real("test")
    expected = torch.from_numpy(np.load(path)["test_images"]).float() / 255 * 2 - 1
    torch.testing.assert_close(x[:, 0], expected)


def test_npz_rgb_to_gray_uses_luma_weights(tmp_path):
    path = write_npz(tmp_path / "rgb.npz", rgb=True, n=(12, 0, 0))
    s = NpzSource(str(path)).read()
    assert s.images.shape == (12, 8, 8, 3) and s.classes == ["0", "1", "2"]
    dm = ImageDataModule(NpzSource(str(path)), channels=1, test_fraction=0.25, val_fraction=0.0)
    dm.setup()
    x, _y = dm.real("train")
    idx = dm.splits["train"]
    rgb = s.images[idx].astype(np.float32) / 255
    gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    assert x.shape == (len(idx), 1, 8, 8)
    np.testing.assert_allclose(x[:, 0].numpy(), gray * 2 - 1, atol=1e-5)
    assert dm.model_kwargs()["channels"] == 1


def test_npz_multi_label_batches_are_float_multi_hot(tmp_path):
    path = write_npz(tmp_path / "chest.npz", k=5, n=(40, 8, 8))
    dm = ImageDataModule(NpzSource(str(path)), batch_size=16)
    kw = dm.model_kwargs()
    assert kw["multi_label"] is True and kw["num_classes"] == 5 and kw["classes"] == ["0", "1", "2", "3", "4"]
    batch = next(iter(dm.train_dataloader()))
    assert batch[LABEL].shape == (16, 5) and batch[LABEL].dtype == torch.float32
    assert set(batch[LABEL].unique().tolist()) <= {0.0, 1.0}
    _, y = dm.real("train")
    assert list(dm.class_counts("train").values()) == y.sum(0).long().tolist()


def test_npz_bad_files_name_the_key(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, train_images=np.zeros((3, 4, 4), np.uint8), val_labels=np.zeros(2))
    with pytest.raises(DataError, match=r"train_labels.*\['train_images', 'val_labels'\]"):
        NpzSource(str(path)).read()
    np.savez(path, train_images=np.zeros((3, 4, 4), np.uint8), train_labels=np.zeros(4))
    with pytest.raises(DataError, match="train_labels has 4 rows but train_images has 3"):
        NpzSource(str(path)).read()
    np.savez(path, train_images=np.full((3, 4, 4), 2.0), train_labels=np.zeros(3))
    with pytest.raises(DataError, match=r"must lie in \[0, 1\]"):
        NpzSource(str(path)).read()
    with pytest.raises(DataError, match="no such file"):
        NpzSource(str(tmp_path / "missing.npz")).read()


# ------------------------------------------------------------------------------------------------------ idx
@pytest.mark.parametrize("gz", [False, True])
def test_idx_raw_and_gz(tmp_path, gz):
    data = write_idx_folder(tmp_path / "mnist", gz, n_train=40)
    s = IdxSource(str(tmp_path / "mnist")).read()
    assert s.images.shape == (48, 6, 6, 1) and s.classes == [str(i) for i in range(10)]
    np.testing.assert_array_equal(s.images[s.split == "train", ..., 0], data["train_x"])
    np.testing.assert_array_equal(s.labels[s.split == "test"], data["t10k_y"])
    dm = ImageDataModule(IdxSource(str(tmp_path / "mnist")), val_fraction=0.2)
    dm.setup()
    # test is the file's; val is drawn from train, stratified: 4 per class -> round(0.8) = 1 per class
    assert len(dm.real("test")[0]) == 8
    assert len(dm.real("val")[0]) == 10 and len(dm.real("train")[0]) == 30
    assert sorted(dm.real("val")[1].tolist()) == list(range(10))
    assert np.intersect1d(dm.splits["val"], dm.splits["train"]).size == 0


def test_idx_fashion_names_and_bad_files(tmp_path):
    write_idx_folder(tmp_path / "fashion-mnist", gz=True)
    assert IdxSource(str(tmp_path / "fashion-mnist")).read().classes == FASHION_MNIST_CLASSES
    assert IdxSource(str(tmp_path / "fashion-mnist"), classes=list("abcdefghij")).read().classes[0] == "a"
    root = tmp_path / "broken"
    write_idx_folder(root, gz=False)
    bad = root / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x08\x03\x00\x00" + bad.read_bytes()[4:])
    with pytest.raises(DataError, match="train-images-idx3-ubyte is not an idx file"):
        IdxSource(str(root)).read()
    write_idx(bad, RNG.integers(0, 255, (20, 6, 6)))
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(DataError, match="train-images-idx3-ubyte is truncated"):
        IdxSource(str(root)).read()
    write_idx(bad, RNG.integers(0, 255, (20, 6, 6)))
    (root / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        IdxSource(str(root)).read()


def test_sources_build_from_hydra_config(tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    root = png_folder(tmp_path / "imgs", (3, 3), size=(6, 10))
    cfg = OmegaConf.create({"_target_": "datamodules.images.ImageDataModule", "image_size": 8, "val_fraction": 0.0,
                            "source": {"_target_": "datamodules.image_readers.FolderSource", "root": str(root),
                                       "extensions": ["png"], "size": [6, 6]}})
    dm = instantiate(cfg)
    assert isinstance(dm.source, FolderSource) and dm.source.size == (6, 6)
    assert dm.model_kwargs()["image_size"] == 8 and "size=6x6" in dm.describe()


def test_digits():
    s = DigitsSource().read()
    assert s.images.shape == (1797, 8, 8, 1) and s.images.dtype == np.uint8 and s.images.max() == 255
    assert s.split is None and s.classes == [str(i) for i in range(10)]


# --------------------------------------------------------------------------------------------------- folders
def test_png_folder_modes_rgba_and_jpeg(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.fromarray(np.full((6, 6), 100, np.uint8)).save(root / "a" / "gray.png")
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = 255
    rgba[:3, ..., 3] = 0  # transparent top half
    Image.fromarray(rgba, "RGBA").save(root / "b" / "rgba.png")
    Image.fromarray(np.full((6, 6, 3), (10, 200, 30), np.uint8)).save(root / "b" / "photo.jpg", quality=95)
    s = FolderSource(str(root)).read()
    assert s.classes == ["a", "b"] and s.labels.tolist() == [0, 1, 1]
    assert s.images.shape == (3, 6, 6, 3) and s.images.dtype == np.uint8  # any colour -> C=3
    gray, photo, comp = s.images
    assert (gray == 100).all()  # broadcast to three channels
    assert (comp[:3] == 0).all() and (comp[3:] == (200, 100, 50)).all()  # composited on black
    assert np.abs(photo.astype(int) - (10, 200, 30)).max() < 12  # JPEG is lossy


def test_png_16_bit_scales_by_train_max(tmp_path):
    root = tmp_path / "ct"
    for c in ("x", "y"):
        (root / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((8, 8), 1000 * (i + 1), np.uint16)).save(root / c / f"{i}.png")
    s = FolderSource(str(root)).read()
    assert s.images.dtype == np.uint16 and s.images.shape == (10, 8, 8, 1) and s.images.max() == 5000
    dm = ImageDataModule(FolderSource(str(root)), val_fraction=0.0, test_fraction=0.2)
    dm.setup()
    top = float(s.images[dm.splits["train_pool"]].max())
    assert dm.uint16_scale == top
    x, _ = dm.real("train")
    assert x.max().item() == pytest.approx(1.0) and x.min() >= -1
    # a synthetic uint16 set is read on the real scale, not its own
    fake = ImageSet(np.full((2, 8, 8, 1), int(top) // 2, np.uint16), np.array([0, 1]), ["x", "y"])
    fx, _fy = dm.to_tensors(fake)
    assert fx.shape == (2, 1, 8, 8) and fx.mean().item() == pytest.approx((int(top) // 2) / top * 2 - 1, abs=1e-6)
    with pytest.raises(DataError, match="do not fit"):
        dm.to_tensors(ImageSet(fake.images, np.array([0, 5]), ["x", "y"]))


def test_folder_mixed_sizes_error_then_resize(tmp_path):
    root = png_folder(tmp_path / "imgs", (2, 2))
    Image.fromarray(np.zeros((12, 9), np.uint8)).save(root / "class1" / "big.png")
    with pytest.raises(DataError, match=r"00\.png is 10x10.*big\.png is 12x9.*size"):
        FolderSource(str(root)).read()
    s = FolderSource(str(root), size=[16, 16]).read()
    assert s.images.shape == (5, 16, 16, 1)
    assert (s.images[0] == 0).all() and (s.images[1] == 1).all()  # constant images stay constant when resized


def test_folder_corrupt_and_empty(tmp_path):
    root = png_folder(tmp_path / "imgs", (2, 2))
    (root / "class0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match="broken.png could not be read"):
        FolderSource(str(root)).read()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        FolderSource(str(tmp_path / "empty")).read()
    (tmp_path / "empty" / "cls").mkdir()
    (tmp_path / "empty" / "cls" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no class folder holds files"):
        FolderSource(str(tmp_path / "empty")).read()
    with pytest.raises(DataError, match="no such folder"):
        FolderSource(str(tmp_path / "nowhere")).read()


# ------------------------------------------------------------------------------------------------ NIfTI / DICOM
def test_nifti_slices_window_and_groups(tmp_path):
    vol = np.zeros((12, 12, 10), np.float32)
    vol[2:10, 2:10, 3:7] = np.arange(4, dtype=np.float32) + 1.0  # slices 3..6 non-zero
    nifti(tmp_path / "mr" / "healthy" / "p1.nii.gz", vol)
    nifti(tmp_path / "mr" / "healthy" / "p2.nii", vol[..., None] * 3)  # 4D with one volume is fine
    nifti(tmp_path / "mr" / "lesion" / "p3.nii.gz", vol)
    s = NiftiSource(str(tmp_path / "mr"), slice_fraction=0.6).read()
    # central 6 of 10 slices are 2..7; the all-zero 2 and 7 are skipped -> 4 per volume
    assert s.images.shape == (12, 12, 12, 1) and s.images.dtype == np.float32
    assert s.labels.tolist() == [0] * 8 + [1] * 4 and s.classes == ["healthy", "lesion"]
    assert s.meta["groups"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert 0.0 <= s.images.min() and s.images.max() == pytest.approx(1.0)
    assert s.images[0].max() < s.images[3].max()  # the window keeps the order of intensities across slices
    along0 = NiftiSource(str(tmp_path / "mr"), axis=0, slice_fraction=1.0).read()
    assert along0.images.shape[1:3] == (12, 10) and len(along0) == 3 * 8


def test_nifti_bad_volumes(tmp_path):
    vol = np.ones((6, 6, 6), np.float32)
    vol[1, 2, 3] = np.nan
    nifti(tmp_path / "a" / "c" / "nan.nii.gz", vol)
    with pytest.raises(DataError, match=r"nan\.nii\.gz has 1 NaN"):
        NiftiSource(str(tmp_path / "a")).read()
    nifti(tmp_path / "b" / "c" / "flat.nii.gz", np.ones((6, 6), np.float32))
    with pytest.raises(DataError, match=r"flat\.nii\.gz has shape \(6, 6\); expected a 3D volume"):
        NiftiSource(str(tmp_path / "b")).read()
    with pytest.raises(ConfigError, match="datamodule.source.window"):
        NiftiSource(str(tmp_path / "a"), window=(90, 10))


def test_nifti_slices_of_one_volume_stay_in_one_split(tmp_path):
    vol = RNG.random((8, 8, 10)).astype(np.float32) + 0.1
    for c in ("a", "b"):
        for p in range(5):
            nifti(tmp_path / "mr" / c / f"{p}.nii.gz", vol)
    dm = ImageDataModule(NiftiSource(str(tmp_path / "mr"), slice_fraction=0.5), val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    groups = NiftiSource(str(tmp_path / "mr"), slice_fraction=0.5).read().meta["groups"]
    owner = {}
    for split in ("train", "val", "test"):
        for g in np.unique(groups[dm.splits[split]]):
            assert owner.setdefault(int(g), split) == split
    assert [len(np.unique(groups[dm.splits[s]])) for s in ("train", "val", "test")] == [6, 2, 2]


def test_dicom_rescale_window_and_monochrome1(tmp_path):
    px = np.arange(64, dtype=np.uint16).reshape(8, 8) * 10
    write_dicom(tmp_path / "d" / "a" / "m2.dcm", px, slope=2.0, intercept=-1024.0)
    write_dicom(tmp_path / "d" / "b" / "m1.dcm", px, photometric="MONOCHROME1")
    s = DicomSource(str(tmp_path / "d"), window=(0, 100)).read()
    assert s.images.shape == (2, 8, 8, 1) and s.images.dtype == np.float32 and s.classes == ["a", "b"]
    expected = px / px.max()  # the linear rescale disappears under a 0..100 percentile window
    np.testing.assert_allclose(s.images[0, ..., 0], expected, atol=1e-6)
    np.testing.assert_allclose(s.images[1, ..., 0], 1 - expected, atol=1e-6)  # MONOCHROME1 inverted
    (tmp_path / "d" / "a" / "junk.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(DataError, match="junk.dcm could not be read"):
        DicomSource(str(tmp_path / "d")).read()


# ----------------------------------------------------------------------------------------------- datamodule
def test_split_is_deterministic_stratified_and_disjoint():
    a, b = ImageDataModule(DigitsSource()), ImageDataModule(DigitsSource())
    c = ImageDataModule(DigitsSource(), split_seed=1)
    for dm in (a, b, c):
        dm.setup()
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(a.splits[s], b.splits[s])
    assert not np.array_equal(a.splits["test"], c.splits["test"])
    all_idx = np.concatenate([a.splits[s] for s in ("train", "val", "test")])
    assert len(all_idx) == len(np.unique(all_idx)) == 1797
    assert len(a.splits["test"]) == pytest.approx(0.2 * 1797, abs=10)
    assert min(a.class_counts("test").values()) >= 34  # every class is in the test split


def test_per_class_exact_and_nested(caplog):
    kept = {}
    for n in (1, 5, 20):
        dm = ImageDataModule(DigitsSource(), per_class=n)
        dm.setup()
        assert set(dm.class_counts("train").values()) == {n}
        kept[n] = dm.splits["train"]
    assert set(kept[1]) <= set(kept[5]) <= set(kept[20])
    full = ImageDataModule(DigitsSource(), per_class=10_000)
    with caplog.at_level(logging.INFO, logger="datamodules.images"):
        full.setup()
    assert "kept whole" in caplog.text
    np.testing.assert_array_equal(full.splits["train"], full.splits["train_pool"])
    s = {f: ImageDataModule(DigitsSource(), scarcity=f) for f in (0.1, 0.5)}
    for dm in s.values():
        dm.setup()
    assert len(s[0.1].splits["train"]) == round(0.1 * len(s[0.1].splits["train_pool"]))
    assert set(s[0.1].splits["train"]) <= set(s[0.5].splits["train"])
    np.testing.assert_array_equal(s[0.1].splits["test"], s[0.5].splits["test"])  # scarcity never moves test


def test_split_saved_and_reused(tmp_path):
    dm = ImageDataModule(DigitsSource(), per_class=3, output_dir=str(tmp_path))
    dm.setup()
    path = tmp_path / SPLIT_FILE
    with np.load(path) as z:
        assert str(z["source"]) == "sklearn-digits" and int(z["n_images"]) == 1797
        np.testing.assert_array_equal(z["train"], dm.splits["train"])
    again = ImageDataModule(DigitsSource(), per_class=3, split_seed=7, split_file=str(path))
    again.setup()
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(again.splits[s], dm.splits[s])
    other = tmp_path / "o.npz"
    write_npz(other)
    with pytest.raises(DataError, match="different image set"):
        ImageDataModule(NpzSource(str(other)), split_file=str(path)).setup()


def test_channels_resize_range_and_loader():
    dm = ImageDataModule(DigitsSource(), image_size=12, channels=3, batch_size=32, max_images=200)
    kw = dm.model_kwargs()
    assert kw == {"image_size": 12, "channels": 3, "num_classes": 10, "multi_label": False,
                  "classes": [str(i) for i in range(10)], "cond_channels": 0, "num_params": 0}
    x, y = dm.real("train")
    assert x.shape[1:] == (3, 12, 12) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.9 and x.max() > 0.9
    torch.testing.assert_close(x[:, 0], x[:, 2])  # gray broadcast to RGB
    batches = list(dm.train_dataloader())
    assert sum(len(b[IMAGE]) for b in batches) == len(x) and batches[0][IMAGE].shape == (32, 3, 12, 12)
    assert batches[0][LABEL].shape == (32,)
    first = torch.cat([b[LABEL] for b in dm.train_dataloader()])
    assert not torch.equal(first, y) and torch.equal(first.sort().values, y.sort().values)  # shuffled
    val = list(dm.val_dataloader())  # a split smaller than the batch size is one short batch
    assert len(val) == 1 and len(val[0][IMAGE]) == len(dm.real("val")[0]) < 32


def test_non_square_needs_image_size(tmp_path):
    root = png_folder(tmp_path / "imgs", (3, 3), size=(6, 10))
    with pytest.raises(ConfigError, match="datamodule.image_size.*6x10"):
        ImageDataModule(FolderSource(str(root))).setup()
    dm = ImageDataModule(FolderSource(str(root)), image_size=8, test_fraction=0.34, val_fraction=0.0)
    assert dm.model_kwargs()["image_size"] == 8


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"per_class": 0}, "datamodule.per_class"), ({"channels": 2}, "datamodule.channels"),
     ({"image_size": 2}, "datamodule.image_size"), ({"val_fraction": 0.7}, "datamodule.val_fraction"),
     ({"test_fraction": 0.0}, "datamodule.test_fraction"), ({"scarcity": 0.0}, "datamodule.scarcity"),
     ({"max_images": 0}, "datamodule.max_images"), ({"source": "digits"}, "datamodule.source")],
)
def test_bad_config_names_the_key(kwargs, key):
    args = {"source": DigitsSource(), **kwargs}
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        ImageDataModule(**args)


class _Probe(L.LightningModule):
    """Records the shapes of the batches a real Trainer hands it."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple] = []

    def training_step(self, batch, _):
        self.seen.append((tuple(batch[IMAGE].shape), tuple(batch[LABEL].shape), batch[LABEL].dtype))
        return (self.w * batch[IMAGE].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_batches_through_a_real_trainer(tmp_path):
    dm = ImageDataModule(DigitsSource(), batch_size=16, max_images=100, image_size=8)
    probe = _Probe()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path), accelerator="cpu", devices=1)
    trainer.fit(probe, datamodule=dm)
    assert probe.seen == [((16, 1, 8, 8), (16,), torch.int64)] * 3


@pytest.mark.skipif(not FASHION.is_dir(), reason=f"{FASHION} is absent (Debian package dataset-fashion-mnist)")
def test_fashion_mnist_real_files():
    s = IdxSource(str(FASHION)).read()
    assert s.images.shape == (70000, 28, 28, 1) and s.classes == FASHION_MNIST_CLASSES
    assert (s.split == "train").sum() == 60000 and (s.split == "test").sum() == 10000
    assert np.bincount(s.labels[s.split == "test"]).tolist() == [1000] * 10
    dm = ImageDataModule(IdxSource(str(FASHION)), per_class=5, val_fraction=0.1)
    dm.setup()
    assert len(dm.real("test")[0]) == 10000 and len(dm.real("val")[0]) == 6000
    assert dm.class_counts("train") == {c: 5 for c in FASHION_MNIST_CLASSES}
