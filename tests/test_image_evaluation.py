"""Image evaluation: FID/KID equal torchmetrics', the extractor round-trips, TSTR tells real signal from noise."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from evaluation.image_features import InceptionFeatures, TrainedCNNFeatures, load_small_cnn
from evaluation.image_metrics import fid, kid
from evaluation.images import (ImageEvaluation, flat_metrics, read_synthetic, spread_ratios, to_markdown,
                               utility_rows, write_report)
from models.nets.classifier import SmallCNN
from scarce.errors import ConfigError, DataError
from scarce.io import sha256_file

CLASSES = ["left", "right"]
FAST = {"classifier": {"width": 8, "steps": 60, "batch_size": 32}, "seeds": (0, 1), "progress": False,
        "kid_subsets": 10}


def left_right(n: int, seed: int, size: int = 8, noise: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: left half brighter; class 1: right half brighter; Gaussian noise on top. (n, 1, size, size)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(2, (n,), generator=g)
    x = torch.randn(n, 1, size, size, generator=g) * noise
    half = size // 2
    x[y == 0, :, :, :half] += 0.6
    x[y == 1, :, :, half:] += 0.6
    return x.clamp(-1, 1), y


def fast_eval(**kw) -> ImageEvaluation:
    return ImageEvaluation(**{**FAST, "features": TrainedCNNFeatures(width=8, steps=40, batch_size=32), **kw})


class _Features(nn.Module):
    """What torchmetrics calls: images -> our extractor's (N, D) features, float64 so both sides compute alike."""

    def __init__(self, net: SmallCNN):
        super().__init__()
        self.net, self.num_features = net, net.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x * 2 - 1).double()  # torchmetrics' normalize=True hands over [0, 1] floats


# ----------------------------------------------------------------------------------------------- metrics
def test_fid_and_kid_equal_torchmetrics():
    torch.manual_seed(0)
    net = SmallCNN(1, 2, width=8, feature_dim=16).eval()
    real01 = (left_right(120, 1)[0] + 1) / 2
    fake01 = ((left_right(90, 2)[0] * 0.7 + 0.2) + 1) / 2
    with torch.no_grad():
        f_real, f_fake = net.features(real01 * 2 - 1).double(), net.features(fake01 * 2 - 1).double()

        tm_fid = FrechetInceptionDistance(feature=_Features(net), normalize=True)
        tm_fid.update(real01, real=True)
        tm_fid.update(fake01, real=False)
        expected = float(tm_fid.compute())
        assert fid(f_real, f_fake) == pytest.approx(expected, rel=1e-3)
        assert expected > 0.01  # a real difference, not two zeros agreeing

        with pytest.warns(UserWarning):  # torchmetrics warns that KID keeps all features in memory
            tm_kid = KernelInceptionDistance(feature=_Features(net), subsets=7, subset_size=40, normalize=True)
        tm_kid.update(real01, real=True)
        tm_kid.update(fake01, real=False)
        torch.manual_seed(5)  # torchmetrics draws its subsets from the global generator; ours from seed=5
        tm_mean, tm_std = (float(v) for v in tm_kid.compute())
    ours = kid(f_real, f_fake, subsets=7, subset_size=40, seed=5)
    assert ours["mean"] == pytest.approx(tm_mean, rel=1e-6)
    assert ours["std"] == pytest.approx(tm_std, rel=1e-6)
    assert tm_std > 0  # the subsets really differed


def test_fid_zero_on_itself_and_equal_to_squared_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = torch.tensor([0.5, -1.0, 0.0, 2.0, 0.0, 0.25], dtype=torch.float64)
    # same covariance, shifted mean: the trace term vanishes and FID is exactly |shift|^2
    assert fid(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    assert fid(a, a + 2 * shift) > fid(a, a + shift) > fid(a, a + 0.1 * shift) > 0
    assert fid(a, a * 2) > 1.0  # a scale change counts too


def test_kid_subset_capped_and_grows_with_shift():
    g = torch.Generator().manual_seed(1)
    real, same, shifted = (torch.randn(n, 8, generator=g, dtype=torch.float64) for n in (30, 50, 50))
    out = kid(real, same, subsets=20, subset_size=1000)
    assert out["subset_size"] == 30 and out["subsets"] == 20
    assert abs(out["mean"]) < 3 * out["std"] + 0.05  # unbiased: near 0 for one distribution
    far = kid(real, shifted + 1.5, subsets=20, subset_size=1000)
    assert far["mean"] > 10 * max(abs(out["mean"]), out["std"])
    with pytest.raises(DataError, match="at least 2 samples"):
        kid(real[:1], same)


# -------------------------------------------------------------------------------------------- extractors
def test_trained_extractor_saved_reloaded_with_same_features(tmp_path):
    train, test = left_right(200, 0), left_right(100, 1)
    ext = TrainedCNNFeatures(width=8, feature_dim=16, steps=60, batch_size=32)
    ext.fit(train[0], train[1], 2, test, tmp_path)
    info = ext.describe()
    path = tmp_path / "feature_extractor.pt"
    assert info["file"] == str(path) and info["sha256"] == sha256_file(path)
    assert info["test_accuracy"] > 0.9  # it learnt the real task
    assert [p.name for p in tmp_path.iterdir()] == ["feature_extractor.pt"]  # atomic write left no temp file

    blob = torch.load(path, weights_only=True)  # plain tensors and data: loads without unpickling code
    assert blob["meta"]["feature_dim"] == 16
    again = TrainedCNNFeatures.load(path)
    assert again.describe()["sha256"] == info["sha256"]
    feats = ext(test[0])
    assert feats.shape == (100, 16) and feats.dtype == torch.float64
    assert torch.equal(again(test[0]), feats)
    model, meta = load_small_cnn(path)
    assert torch.allclose(model.features(test[0]).double() * meta["feature_scale"], feats)

    # same data, same seed, another folder: byte-identical file (the hash does not depend on the temp name)
    twin = TrainedCNNFeatures(width=8, feature_dim=16, steps=60, batch_size=32)
    twin.fit(train[0], train[1], 2, test, tmp_path / "twin")
    assert twin.describe()["sha256"] == info["sha256"]


def test_inception_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"evaluation\.features\.weights_path=.*no such file"):
        InceptionFeatures(weights_path=str(tmp_path / "pt_inception.pth"))
    if importlib.util.find_spec("torch_fidelity") is None:  # a file that exists, but the package is absent
        (tmp_path / "w.pth").write_bytes(b"x")
        with pytest.raises(ConfigError, match="torch-fidelity"):
            InceptionFeatures(weights_path=str(tmp_path / "w.pth"))


def test_extractor_is_chosen_by_target():
    ev = instantiate({"_target_": "evaluation.images.ImageEvaluation", "seeds": [0], "progress": False,
                      "classifier": {"steps": 5},
                      "features": {"_target_": "evaluation.image_features.TrainedCNNFeatures", "steps": 7}})
    assert isinstance(ev.features, TrainedCNNFeatures) and ev.features.steps == 7
    assert ev.classifier["steps"] == 5 and ev.classifier["width"] == 32  # defaults fill the rest
    default = ImageEvaluation(classifier={"steps": 9}, progress=False)
    assert isinstance(default.features, TrainedCNNFeatures) and default.features.steps == 9


# ------------------------------------------------------------------------------------------- the protocol
def test_tstr_learns_from_good_synthetic_and_not_from_shuffled_labels(tmp_path):
    train, test = left_right(200, 0), left_right(300, 1)
    good = left_right(400, 2)  # freshly drawn from the same process: a perfect generator
    report = fast_eval().run(train, test, good, CLASSES, str(tmp_path / "good"))
    util = report["utility"]
    assert util["TSTR"]["accuracy"]["mean"] > 0.9
    assert util["TRTR"]["accuracy"]["mean"] > 0.9
    assert util["TSTR"]["accuracy"]["n"] == 2 and set(util["TSTR"]["per_class"]) == set(CLASSES)
    assert report["privacy"]["exact_copies"] == 0

    g = torch.Generator().manual_seed(3)
    shuffled = (good[0], good[1][torch.randperm(len(good[1]), generator=g)])
    bad = fast_eval().run(train, test, shuffled, CLASSES, str(tmp_path / "bad"))
    assert 0.3 < bad["utility"]["TSTR"]["accuracy"]["mean"] < 0.7  # labels carry no signal: chance
    assert bad["utility"]["TSTR"]["balanced_accuracy"]["mean"] < 0.7

    # fidelity sees what utility cannot: a brightness shift moves FID far above the same-process value
    shifted = ((good[0] + 0.8).clamp(-1, 1), good[1])
    off = fast_eval().run(train, test, shifted, CLASSES, str(tmp_path / "off"))
    assert off["fidelity"]["fid"] > 5 * report["fidelity"]["fid"]
    assert off["fidelity"]["kid"]["mean"] > report["fidelity"]["kid"]["mean"]
    # a perfect generator varies each class as much as real data does
    assert 0.8 < report["fidelity"]["within_class_spread_ratio"] < 1.25


def test_spread_ratio_sees_per_class_collapse():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(600) % 3
    real = torch.randn(600, 16, generator=g) + 5 * y[:, None].float()
    fresh = torch.randn(600, 16, generator=g) + 5 * y[:, None].float()
    assert spread_ratios(real, y, fresh, y, ["a", "b", "c"])["within_class_spread_ratio"] == pytest.approx(1, abs=0.1)
    # one image per class plus 5% jitter: the class means are right, the variety is gone
    collapsed = 5 * y[:, None].float() + torch.randn(3, 16, generator=g)[y] + 0.05 * torch.randn(600, 16, generator=g)
    out = spread_ratios(real, y, collapsed, y, ["a", "b", "c"])
    assert out["within_class_spread_ratio"] == pytest.approx(0.05, rel=0.2)
    assert set(out["per_class_spread_ratio"]) == {"a", "b", "c"}
    # twice the real spread reads 2; a class with a single synthetic image is left out
    wide = 5 * y[:, None].float() + 2 * torch.randn(600, 16, generator=g)
    keep = (y != 2) | (torch.arange(600) == 2)
    out = spread_ratios(real, y, wide[keep], y[keep], ["a", "b", "c"])
    assert set(out["per_class_spread_ratio"]) == {"a", "b"} and out["within_class_spread_ratio"] == pytest.approx(2, rel=0.1)


def test_report_sections_markdown_flat_metrics_and_copies(tmp_path):
    train, test = left_right(150, 0), left_right(100, 1)
    syn_x, syn_y = left_right(120, 2)
    syn_x = torch.cat([syn_x, train[0][:5]])  # five memorised training images
    syn_y = torch.cat([syn_y, train[1][:5]])
    syn_x[0, 0, 0, 0] = float("nan")
    report = fast_eval(seeds=(0, 1, 2)).run(train, test, (syn_x, syn_y), CLASSES, str(tmp_path))
    assert list(report) == ["meta", "utility", "fidelity", "privacy", "quality"]
    assert report["privacy"]["exact_copies"] == 5 and report["privacy"]["holdout_exact_copies"] == 0
    assert report["privacy"]["near_copies"] >= 5
    q = report["quality"]
    assert q["nonfinite_values"] == 1 and q["images_with_nonfinite"] == 1
    assert sum(q["synthetic_class_counts"].values()) == 125
    assert report["meta"]["features"]["sha256"] == sha256_file(tmp_path / "feature_extractor.pt")
    eff = report["utility"]["augmentation_effect_accuracy"]
    assert eff["n"] == 3 and "verdict" in eff

    flat = flat_metrics(report)
    assert flat["eval/TSTR/accuracy"] == report["utility"]["TSTR"]["accuracy"]["mean"]
    assert flat["eval/fidelity/fid"] == report["fidelity"]["fid"]
    assert all(isinstance(v, float) and np.isfinite(v) for v in flat.values())
    rows = utility_rows(report)
    assert [r[0] for r in rows] == ["real only (TRTR)", "synthetic only (TSTR)", "real + synthetic"]
    md = to_markdown(report)
    assert "## Fidelity" in md and "exact 5" in md and "Non-finite values: 1" in md and "Within-class spread" in md
    j, m = write_report(report, tmp_path)
    assert json.loads(j.read_text())["fidelity"]["fid"] == pytest.approx(report["fidelity"]["fid"])
    assert m.read_text() == md


def test_multi_label_reports_macro_auc(tmp_path):
    x, y = left_right(240, 0)
    # two labels: "left bright" and "bottom-right pixel bright"; the second is made learnable by construction
    y2 = torch.stack([(y == 0).long(), (torch.arange(240) % 2)], 1)
    x[y2[:, 1] == 1, :, 6:, 6:] = 1.0
    train, test, syn = (x[:100], y2[:100]), (x[100:180], y2[100:180]), (x[180:], y2[180:])
    report = fast_eval().run(train, test, syn, ["left", "corner"], str(tmp_path))
    util = report["utility"]
    assert util["headline"] == "auc_macro" and util["TRTR"]["auc_macro"]["mean"] > 0.8
    assert "augmentation_effect_auc_macro" in util and report["fidelity"]["per_class_fid"] == {}
    assert "eval/TSTR/auc_macro" in flat_metrics(report) and "auc macro" in to_markdown(report)


# ------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("case, match", [
    ("class_index", r"synthetic labels use class index 2 but classes lists 2 names"),
    ("size", r"synthetic images are \(C, H, W\) = \(1, 10, 10\) but real_train images are \(1, 8, 8\)"),
    ("channels", r"real_test images are \(C, H, W\) = \(3, 8, 8\)"),
    ("empty", r"synthetic holds no images"),
    ("mixed", r"single-label \(N,\) and multi-label \(N, K\) cannot be mixed"),
    ("length", r"synthetic has 20 images but 19 labels"),
])
def test_bad_inputs_are_clear_errors(tmp_path, case, match):
    train, test, syn = left_right(20, 0), left_right(20, 1), left_right(20, 2)
    if case == "class_index":
        syn = (syn[0], syn[1].clone().fill_(2))
    elif case == "size":
        syn = (left_right(20, 2, size=10)[0], syn[1])
    elif case == "channels":
        test = (test[0].repeat(1, 3, 1, 1), test[1])
    elif case == "empty":
        syn = (syn[0][:0], syn[1][:0])
    elif case == "mixed":
        syn = (syn[0], torch.nn.functional.one_hot(syn[1], 2))
    elif case == "length":
        syn = (syn[0], syn[1][:19])
    with pytest.raises(DataError, match=match):
        fast_eval().run(train, test, syn, CLASSES, str(tmp_path))


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match=r"evaluation\.classifier\.depth is not a setting"):
        ImageEvaluation(classifier={"depth": 3})
    with pytest.raises(ConfigError, match=r"evaluation\.classifier\.steps=0"):
        ImageEvaluation(classifier={"steps": 0})
    with pytest.raises(ConfigError, match=r"evaluation\.seeds=\[\]"):
        ImageEvaluation(seeds=[])


# ------------------------------------------------------------------------------ the pipeline's protocol
def test_evaluate_reads_npz_and_png_folders_against_a_datamodule(tmp_path):
    from datamodules.image_readers import DigitsSource
    from datamodules.image_set import ImageSet, to_uint8
    from datamodules.images import ImageDataModule
    from scarce.generation import write_images_npz, write_images_png

    dm = ImageDataModule(DigitsSource(), val_fraction=0.2, test_fraction=0.3)
    dm.setup("fit")
    x, y = dm.real("val")  # unseen real digits stand in for a perfect generator's output
    fresh = ImageSet(to_uint8(x), y.numpy(), list(dm.classes))
    npz, png = write_images_npz(fresh, tmp_path / "syn.npz"), write_images_png(fresh, tmp_path / "syn_png")
    ev = ImageEvaluation(classifier={"width": 16, "steps": 150}, seeds=(0,), progress=False, kid_subsets=5,
                         features=TrainedCNNFeatures(width=8, steps=40))
    from_npz = ev.evaluate(dm, npz, tmp_path / "a")
    assert from_npz["meta"]["rows"]["synthetic"] == len(x) and from_npz["quality"]["synthetic_class_counts"] == {
        c: int((y == k).sum()) for k, c in enumerate(dm.classes)}
    assert from_npz["utility"]["TSTR"]["accuracy"]["mean"] > 0.7  # 10 classes: chance is 0.1
    # the PNG folder holds the same images per class (read in folder order, mapped back to class indices by name)
    (xa, ya), (xb, yb) = read_synthetic(dm, npz), read_synthetic(dm, png)
    assert torch.equal(torch.bincount(ya, minlength=10), torch.bincount(yb, minlength=10))
    for k in range(10):
        assert torch.allclose(xa[ya == k].sum(0), xb[yb == k].sum(0), atol=1e-3)
    table = ImageEvaluation.utility_table(from_npz)
    assert list(table.columns) == ["trained on", "accuracy", "balanced_accuracy"] and len(table) == 3
    assert ev.to_markdown(from_npz) == to_markdown(from_npz)
    with pytest.raises(DataError, match="expected an .npz file or a folder"):
        ev.evaluate(dm, tmp_path / "nothing.csv", tmp_path / "c")


def test_png_folders_of_class_names_that_are_not_file_names(tmp_path):
    from datamodules.image_set import ImageSet
    from scarce.generation import write_images_png
    from scarce.io import class_folder_names

    # Fashion-MNIST's first class is "T-shirt/top"; "a:b" and "a?b" both become "a_b", so one gets its index
    classes = ["T-shirt/top", "a:b", "a?b", "..", "plain"]
    assert class_folder_names(classes) == ["T-shirt_top", "a_b", "a_b_2", "class_3", "plain"]
    images = np.stack([np.full((4, 4, 1), 40 * k, np.uint8) for k in range(5) for _ in range(2)])
    labels = np.repeat(np.arange(5), 2)
    out = write_images_png(ImageSet(images, labels, classes), tmp_path / "png")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(class_folder_names(classes))

    class DM:  # what read_synthetic needs of a datamodule: its class names and its tensor conversion
        multi_label = False

        def __init__(self):
            self.classes = list(classes)

        def to_tensors(self, s):
            return torch.from_numpy(s.images).float(), torch.from_numpy(s.labels)

    x, y = read_synthetic(DM(), out)
    # every image comes back under its own class, whatever its folder is called
    assert sorted(y.tolist()) == labels.tolist()
    for k in range(5):
        assert torch.all(x[y == k] == 40 * k)
    (out / "labels.csv").write_text("file,label\nT-shirt_top/0.png,T-shirt/top\nT-shirt_top/1.png,plain\n")
    with pytest.raises(DataError, match="several labels"):
        read_synthetic(DM(), out)
