"""Train-on-synthetic / test-on-real for images, with FID/KID, privacy and quality in one report.

Protocol: for each seed, a SmallCNN is trained from scratch on (a) the real training split (TRTR), (b) the synthetic
images (TSTR), (c) both pooled (augmentation), each for the same number of optimisation steps so every setting gets
equal compute, and tested on the real test split, which the generator never saw. Means and 95% intervals over
seeds; the augmentation effect is the paired difference to TRTR. Fidelity compares real TEST images with the
synthetic ones in the feature space of an offline extractor (and real train vs real test as the reference floor).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from datamodules.image_readers import FolderSource, NpzSource
from datamodules.image_set import ImageSet

from evaluation.image_features import (FeatureExtractor, TrainedCNNFeatures, classification_scores, fit_small_cnn,
                                       predict, resolve_device)
from evaluation.image_metrics import KID_SUBSET_SIZE, KID_SUBSETS, fid, kid
from evaluation.stats import checked_seeds, classifier_settings, fmt, mean_ci, paired_effect
from scarce.errors import ConfigError, DataError, check_range
from scarce.io import write_json, write_text

log = logging.getLogger(__name__)

Pair = tuple[torch.Tensor, torch.Tensor]
SETTINGS = {"TRTR": "real only (TRTR)", "TSTR": "synthetic only (TSTR)", "TRSTR": "real + synthetic"}
CLASSIFIER_DEFAULTS = {"width": 32, "steps": 300, "lr": 2e-3, "batch_size": 64}
PER_CLASS_FID_MIN = 20  # per-class FID only where both sets hold at least this many images of the class
REPORT_JSON, REPORT_MD = "report.json", "report.md"


class ImageEvaluation:
    """Runs the TSTR protocol and the fidelity, privacy and quality checks on images; returns the report as data.

    classifier: SmallCNN settings {width, steps, lr, batch_size} (defaults in ``CLASSIFIER_DEFAULTS``); every setting
        and seed trains for exactly ``steps`` minibatches. seeds: one fit per seed and setting (3+ for intervals).
    features: a :class:`~evaluation.image_features.FeatureExtractor` (from config by ``_target_``); None trains a
        SmallCNN with the classifier settings on the real training split. max_synthetic: cap on synthetic images
        used (a fixed random subset). privacy_images: query images per set for nearest-neighbour distances.
    kid_subsets, kid_subset_size: KID's random subsets (size capped at the smaller set). device: "auto", "cpu", ...
    """

    def __init__(
        self,
        classifier: dict | None = None,
        seeds: tuple[int, ...] | list[int] = (0, 1, 2),
        features: FeatureExtractor | None = None,
        max_synthetic: int | None = None,
        privacy_images: int = 2000,
        kid_subsets: int = KID_SUBSETS,
        kid_subset_size: int = KID_SUBSET_SIZE,
        device: str = "auto",
        progress: bool = True,
    ):
        self.classifier = classifier_settings(classifier, CLASSIFIER_DEFAULTS)
        if self.classifier["width"] % 8:
            raise ConfigError(f"evaluation.classifier.width={self.classifier['width']} is not allowed; "
                              "expected a multiple of 8")
        self.seeds = checked_seeds(seeds)
        self.device = resolve_device(device)
        self.features = features if features is not None else TrainedCNNFeatures(**self.classifier, device=device)
        self.max_synthetic = check_range("evaluation.max_synthetic", max_synthetic, 1, integer=True, allow_none=True)
        self.privacy_images = check_range("evaluation.privacy_images", privacy_images, 10, integer=True)
        self.kid_subsets = check_range("evaluation.kid_subsets", kid_subsets, 1, integer=True)
        self.kid_subset_size = check_range("evaluation.kid_subset_size", kid_subset_size, 2, integer=True)
        self.progress = progress

    # ------------------------------------------------------------------ the evaluator protocol train.py uses
    def check(self, datamodule) -> None:
        """Nothing to check before training: classes and image size are checked against the synthetic set."""

    def evaluate(self, datamodule, synthetic: str | Path | ImageSet | Pair, out_dir: str | Path) -> dict:
        """The report for synthetic images (an .npz, a class-folder PNG set, an ImageSet or tensors) against the
        datamodule's real train and test splits; the feature extractor file is written to ``out_dir``."""
        datamodule.setup("fit")
        syn = read_synthetic(datamodule, synthetic)
        return self.run(datamodule.real("train"), datamodule.real("test"), syn, list(datamodule.classes),
                        str(out_dir))

    @staticmethod
    def to_markdown(report: dict) -> str:
        return to_markdown(report)  # the module function (class scope is not searched from here)

    @staticmethod
    def flat_metrics(report: dict) -> dict[str, float]:
        return flat_metrics(report)

    @staticmethod
    def utility_table(report: dict) -> pd.DataFrame:
        """utility_rows as a table with named columns (for W&B)."""
        return pd.DataFrame(utility_rows(report), columns=["trained on", *_utility_columns(report)])

    # ------------------------------------------------------------------------------------------------- run
    def run(self, real_train: Pair, real_test: Pair, synthetic: Pair, classes: list[str], out_dir: str) -> dict:
        """The full report: ``meta``, ``utility``, ``fidelity``, ``privacy``, ``quality``.

        Each pair is (images (N, C, H, W) float in [-1, 1], labels (N,) int64 or (N, K) multi-hot).
        """
        check_inputs(real_train, real_test, synthetic, classes)
        # labels as the losses want them: int64 class indices, or float multi-hot
        real_train, real_test, synthetic = (_typed(p) for p in (real_train, real_test, synthetic))
        t0 = time.perf_counter()
        quality_section = quality(real_train, synthetic, classes)
        syn_x, syn_y = synthetic
        if not torch.isfinite(syn_x).all():
            log.warning("synthetic images hold %d non-finite values; they are set to 0 for training and features",
                        quality_section["nonfinite_values"])
            syn_x = torch.nan_to_num(syn_x, nan=0.0, posinf=1.0, neginf=-1.0)
        if self.max_synthetic is not None and len(syn_x) > self.max_synthetic:
            keep = torch.randperm(len(syn_x), generator=torch.Generator().manual_seed(0))[: self.max_synthetic]
            syn_x, syn_y = syn_x[keep], syn_y[keep]
        synthetic = (syn_x.float(), syn_y)
        real_train = (real_train[0].float(), real_train[1])
        real_test = (real_test[0].float(), real_test[1])
        multi = real_train[1].ndim == 2

        utility = self.utility(real_train, real_test, synthetic, classes)
        t_util = time.perf_counter()
        self.features.fit(real_train[0], real_train[1], len(classes), real_test, out_dir)
        f_train, f_test, f_syn = (self.features(x) for x in (real_train[0], real_test[0], synthetic[0]))
        fidelity = self.fidelity(f_train, f_test, f_syn, real_test[1], synthetic[1], classes)
        privacy = self.privacy(real_train[0], real_test[0], synthetic[0], f_train, f_test, f_syn)
        t_end = time.perf_counter()
        return {
            "meta": {"domain": "image", "task": "multi-label classification" if multi else "classification",
                     "classes": list(classes), "image_shape": list(real_train[0].shape[1:]),
                     "rows": {"real_train": len(real_train[0]), "real_test": len(real_test[0]),
                              "synthetic": len(synthetic[0]), "synthetic_given": int(quality_section["images"])},
                     "seeds": self.seeds, "classifier": dict(self.classifier), "features": self.features.describe(),
                     "seconds": {"utility": round(t_util - t0, 2), "fidelity_privacy": round(t_end - t_util, 2)}},
            "utility": utility,
            "fidelity": fidelity,
            "privacy": privacy,
            "quality": quality_section,
        }

    def utility(self, train: Pair, test: Pair, synthetic: Pair, classes: list[str]) -> dict:
        """TRTR / TSTR / TRSTR scores on the real test split, mean_ci over seeds, and the augmentation effect."""
        multi = train[1].ndim == 2
        headline = "auc_macro" if multi else "accuracy"
        sources = {"TRTR": train, "TSTR": synthetic,
                   "TRSTR": (torch.cat([train[0], synthetic[0]]), torch.cat([train[1], synthetic[1]]))}
        jobs = [(s, seed) for s in SETTINGS for seed in self.seeds]
        runs: dict[str, list[dict]] = {s: [] for s in SETTINGS}
        for setting, seed in tqdm(jobs, desc="TSTR fits", disable=not self.progress, leave=False):
            x, y = sources[setting]
            model = fit_small_cnn(x, y, len(classes), seed=seed, device=self.device,
                                  **{k: self.classifier[k] for k in ("width", "steps", "lr", "batch_size")})
            runs[setting].append(classification_scores(predict(model, test[0]), test[1], len(classes)))
        out: dict[str, Any] = {"headline": headline, "steps": self.classifier["steps"]}
        for setting, scores in runs.items():
            rec = {k: mean_ci([s[k] for s in scores], bounds=(0.0, 1.0)) for k in scores[0] if k != "per_class"}
            rec["per_class"] = {name: mean_ci([s["per_class"][k] for s in scores], bounds=(0.0, 1.0))
                                for k, name in enumerate(classes) if scores[0]["per_class"][k] is not None}
            out[setting] = rec
        out[f"augmentation_effect_{headline}"] = paired_effect([s[headline] for s in runs["TRTR"]],
                                                               [s[headline] for s in runs["TRSTR"]])
        return out

    def fidelity(self, f_train: torch.Tensor, f_test: torch.Tensor, f_syn: torch.Tensor, y_test: torch.Tensor,
                 y_syn: torch.Tensor, classes: list[str]) -> dict:
        """FID/KID of synthetic vs real test, the real train vs real test reference, per-class FID where cheap."""
        kw = {"subsets": self.kid_subsets, "subset_size": self.kid_subset_size}
        # FID is biased upward for small sets, so the reference (real train vs real test) is matched by a FID of
        # as many synthetic images as there are real training images
        n_ref = min(len(f_train), len(f_syn))
        matched = torch.randperm(len(f_syn), generator=torch.Generator().manual_seed(0))[:n_ref]
        out: dict[str, Any] = {
            "fid": fid(f_test, f_syn),
            "kid": kid(f_test, f_syn, **kw),
            "fid_at_reference_size": fid(f_test, f_syn[matched]),
            "reference_size": int(n_ref),
            "fid_reference_real_train_vs_test": fid(f_test, f_train),
            "kid_reference_real_train_vs_test": kid(f_test, f_train, **kw),
            "per_class_fid": {},
            "features": self.features.describe(),
        }
        if y_test.ndim == 1:
            for k, name in enumerate(classes):
                a, b = f_test[y_test == k], f_syn[y_syn == k]
                if len(a) >= PER_CLASS_FID_MIN and len(b) >= PER_CLASS_FID_MIN:
                    out["per_class_fid"][name] = fid(a, b)
            out.update(spread_ratios(f_test, y_test, f_syn, y_syn, classes))
        return out

    def privacy(self, x_train: torch.Tensor, x_test: torch.Tensor, x_syn: torch.Tensor, f_train: torch.Tensor,
                f_test: torch.Tensor, f_syn: torch.Tensor) -> dict:
        """Nearest-training-image distances of synthetic images vs real test images, in feature and pixel space."""
        g = torch.Generator().manual_seed(0)
        ref = torch.randperm(len(x_train), generator=g)[: max(10 * self.privacy_images, 20_000)]
        q_syn = torch.randperm(len(x_syn), generator=g)[: self.privacy_images]
        q_test = torch.randperm(len(x_test), generator=g)[: self.privacy_images]
        d_syn, _ = nearest(f_syn[q_syn], f_train[ref])
        d_test, _ = nearest(f_test[q_test], f_train[ref])
        p_syn, i_syn = nearest(x_syn[q_syn].flatten(1), x_train[ref].flatten(1))
        p_test, i_test = nearest(x_test[q_test].flatten(1), x_train[ref].flatten(1))
        exact = (_levels(x_syn[q_syn]) == _levels(x_train[ref][i_syn])).flatten(1).all(1)
        exact_test = (_levels(x_test[q_test]) == _levels(x_train[ref][i_test])).flatten(1).all(1)
        p5, pp5 = float(np.quantile(d_test, 0.05)), float(np.quantile(p_test, 0.05))
        return {
            "feature_nn_synthetic_median": float(np.median(d_syn)),
            "feature_nn_holdout_median": float(np.median(d_test)),
            "feature_nn_ratio": float(np.median(d_syn) / max(np.median(d_test), 1e-12)),
            "share_closer_than_holdout_p5": float((d_syn < p5).mean()),
            "pixel_nn_synthetic_median": float(np.median(p_syn)),
            "pixel_nn_holdout_median": float(np.median(p_test)),
            "pixel_nn_ratio": float(np.median(p_syn) / max(np.median(p_test), 1e-12)),
            "pixel_share_closer_than_holdout_p5": float((p_syn < pp5).mean()),
            "exact_copies": int(exact.sum()),
            "holdout_exact_copies": int(exact_test.sum()),
            # closer to a training image (RMS per pixel) than ANY real test image gets: memorised, or nearly so
            "near_copies": int((p_syn < p_test.min()).sum()),
            # without memorisation a synthetic image beats the holdout minimum with chance 1 / (holdout + 1)
            "near_copies_expected": float(len(q_syn) / (len(q_test) + 1)),
            "images_compared": int(len(q_syn)),
            "holdout_images_compared": int(len(q_test)),
            "reference_images": int(len(ref)),
        }


def read_synthetic(datamodule, synthetic: str | Path | ImageSet | Pair) -> Pair:
    """Synthetic images as ((N, C, H, W) in [-1, 1], labels) on the real data's pixel scale and class indices."""
    if isinstance(synthetic, tuple):
        return synthetic
    if isinstance(synthetic, (str, Path)):
        path = Path(synthetic)
        if path.suffix == ".npz":
            synthetic = NpzSource(str(path), classes=datamodule.classes).read()
        elif path.is_dir():
            if (path / "images").is_dir() and datamodule.multi_label:
                raise DataError(f"synthetic={str(path)!r}: multi-label PNG folders are not read back; generate "
                                "an .npz (generate.output=synthetic.npz) for multi-label data")
            found = FolderSource(str(path)).read()
            names = folder_classes(path, found.classes)
            unknown = [c for c in names if c not in datamodule.classes]
            if unknown:
                raise DataError(f"synthetic={str(path)!r} has class folders {unknown} that are not classes of the "
                                f"real data {list(datamodule.classes)}")
            # folders are read in name order; map each to the real data's index of that class name
            lut = np.asarray([datamodule.classes.index(c) for c in names], dtype=np.int64)
            synthetic = ImageSet(found.images, lut[found.labels], list(datamodule.classes), None, found.source)
        else:
            raise DataError(f"synthetic={str(path)!r}: expected an .npz file or a folder of class folders")
    return datamodule.to_tensors(synthetic)


def folder_classes(path: Path, folders: list[str]) -> list[str]:
    """The class name of each class folder: from the folder's ``labels.csv`` (``file,label`` rows, as generate.py
    writes them; class names that are not safe file names get a changed folder name) when there is one, else the
    folder name itself."""
    csv = path / "labels.csv"
    if not csv.is_file():
        return list(folders)
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if not {"file", "label"} <= set(table.columns):
        raise DataError(f"synthetic={str(path)!r}: labels.csv has columns {list(table.columns)}; expected file, label")
    named: dict[str, set[str]] = {}
    for file, label in zip(table["file"], table["label"]):
        named.setdefault(file.split("/", 1)[0], set()).add(label)
    mixed = {f: sorted(v) for f, v in named.items() if len(v) > 1}
    if mixed:
        raise DataError(f"synthetic={str(path)!r}: labels.csv gives one folder several labels: {mixed}")
    return [next(iter(named[f])) if f in named else f for f in folders]


def _typed(pair: Pair) -> Pair:
    """Labels as the losses want them: int64 class indices, or float multi-hot."""
    return pair[0], pair[1].float() if pair[1].ndim == 2 else pair[1].long()


def _levels(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> the 0..255 levels the images are written with (copies are judged as saved)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round()


def nearest(query: torch.Tensor, ref: torch.Tensor, chunk: int = 512) -> tuple[np.ndarray, torch.Tensor]:
    """(Q, D) query, (R, D) reference -> RMS distance per dimension to the nearest reference row (Q,), its index."""
    ref32 = ref.float()
    r2 = (ref32 ** 2).sum(1)
    dists, idx = [], []
    for i in range(0, len(query), chunk):
        a = query[i:i + chunk].float()
        # ||a - r||^2 = ||a||^2 + ||r||^2 - 2 a.r  in float32 for the search, then the exact distance in float64
        j = ((a ** 2).sum(1, keepdim=True) + r2[None] - 2 * a @ ref32.T).argmin(1)
        dists.append(((query[i:i + chunk].double() - ref[j].double()) ** 2).mean(1).sqrt())
        idx.append(j)
    return torch.cat(dists).numpy(), torch.cat(idx)


def check_inputs(real_train: Pair, real_test: Pair, synthetic: Pair, classes: list[str]) -> None:
    """Clear errors for inputs the protocol cannot use: shapes, label kinds, class indices, empty sets."""
    parts = {"real_train": real_train, "real_test": real_test, "synthetic": synthetic}
    for name, (x, y) in parts.items():
        if x.ndim != 4:
            raise DataError(f"{name} images must be (N, C, H, W); got shape {tuple(x.shape)}")
        if len(x) == 0:
            raise DataError(f"{name} holds no images; nothing to evaluate")
        if len(y) != len(x):
            raise DataError(f"{name} has {len(x)} images but {len(y)} labels")
    shape = tuple(real_train[0].shape[1:])
    for name in ("real_test", "synthetic"):
        other = tuple(parts[name][0].shape[1:])
        if other != shape:
            raise DataError(f"{name} images are (C, H, W) = {other} but real_train images are {shape}; "
                            "generate at the real data's size and channel count")
    multi = real_train[1].ndim == 2
    for name, (_, y) in parts.items():
        if (y.ndim == 2) != multi:
            raise DataError(f"{name} labels have shape {tuple(y.shape)} but real_train labels "
                            f"{tuple(real_train[1].shape)}: single-label (N,) and multi-label (N, K) cannot be mixed")
        if multi:
            if y.shape[1] != len(classes):
                raise DataError(f"{name} labels have {y.shape[1]} columns but classes lists {len(classes)} names "
                                f"{list(classes)}")
        elif y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            bad = int(y.max()) if int(y.max()) >= len(classes) else int(y.min())
            raise DataError(f"{name} labels use class index {bad} but classes lists {len(classes)} names "
                            f"{list(classes)} (indices 0..{len(classes) - 1}); was it generated for this dataset?")
    if len(classes) < 2:
        raise DataError(f"classes={list(classes)}: classification needs at least 2 classes")


def spread_ratios(f_real: torch.Tensor, y_real: torch.Tensor, f_syn: torch.Tensor, y_syn: torch.Tensor,
                  classes: list[str]) -> dict:
    """Within-class spread of synthetic features over that of real ones: the direct sign of per-class mode collapse.

    A class's spread is the RMS distance of its feature vectors to their class mean. The ratio synthetic / real is 1
    when the generator varies a class as much as real data does, near 0 when it draws one image per class whatever
    the noise (FID sees that too, but mixed with everything else). Classes with fewer than 2 images in either set
    are left out; ``within_class_spread_ratio`` is the mean over the classes kept (None if none).
    """
    def spread(f: torch.Tensor) -> float:
        f = f.double()
        return float((f - f.mean(0)).pow(2).sum(1).mean().sqrt())

    per_class = {}
    for k, name in enumerate(classes):
        a, b = f_real[y_real == k], f_syn[y_syn == k]
        if len(a) >= 2 and len(b) >= 2 and spread(a) > 0:
            per_class[name] = spread(b) / spread(a)
    mean = float(np.mean(list(per_class.values()))) if per_class else None
    return {"within_class_spread_ratio": mean, "per_class_spread_ratio": per_class}


def quality(real_train: Pair, synthetic: Pair, classes: list[str]) -> dict:
    """Non-finite values, value range, blank images and class counts of the synthetic images (as given)."""
    x, y = synthetic
    finite = torch.isfinite(x)
    vals = x[finite]
    tol = 1.0 / 255  # values a quantisation step outside [-1, 1] are rounding, not a generator fault
    per_image_std = torch.where(finite, x, torch.zeros(())).flatten(1).std(1)

    def counts(labels: torch.Tensor) -> dict[str, int]:
        c = labels.sum(0) if labels.ndim == 2 else torch.bincount(labels, minlength=len(classes))
        return {name: int(c[k]) for k, name in enumerate(classes)}

    return {
        "images": int(len(x)),
        "nonfinite_values": int((~finite).sum()),
        "images_with_nonfinite": int((~finite).flatten(1).any(1).sum()),
        "min": float(vals.min()) if vals.numel() else None,
        "max": float(vals.max()) if vals.numel() else None,
        "share_outside_range": float(((vals < -1 - tol) | (vals > 1 + tol)).float().mean()) if vals.numel() else 0.0,
        "constant_images": int((per_image_std == 0).sum()),
        "synthetic_class_counts": counts(y),
        "real_train_class_counts": counts(real_train[1]),
        "classes_missing_in_synthetic": [n for n, c in counts(y).items() if c == 0],
    }


# ----------------------------------------------------------------------------------------------- reporting
def _utility_columns(report: dict) -> tuple[str, str]:
    head = report["utility"]["headline"]
    return head, "accuracy" if head == "auc_macro" else "balanced_accuracy"


def utility_rows(report: dict) -> list[list[str]]:
    """[setting, headline metric, second metric] rows with intervals, for markdown, terminal and W&B tables."""
    util = report["utility"]
    head, second = _utility_columns(report)
    return [[label, fmt(util[s][head]), fmt(util[s][second])] for s, label in SETTINGS.items()]


def to_markdown(report: dict) -> str:
    """The human report (report.md)."""
    meta, util, fid_, priv, qual = (report[k] for k in ("meta", "utility", "fidelity", "privacy", "quality"))
    n = meta["rows"]
    head, second = _utility_columns(report)
    eff = util[f"augmentation_effect_{head}"]
    feat = fid_["features"]
    per_class = " | ".join(f"{c}: {fmt(util[s]['per_class'][c], 2)}" for s in ("TSTR",) for c in util[s]["per_class"])
    lines = [
        f"# Evaluation: image {meta['task']} ({len(meta['classes'])} classes, images {meta['image_shape']})",
        "",
        f"Real train {n['real_train']:,} images, real test {n['real_test']:,} (never seen by the generator), "
        f"synthetic {n['synthetic']:,} used. {len(meta['seeds'])} seeds x {util['steps']} steps each; "
        "mean [95% interval].",
        "",
        "## Utility: SmallCNN tested on real data",
        "",
        f"| trained on | {head.replace('_', ' ')} | {second.replace('_', ' ')} |",
        "|---|---|---|",
        *[f"| {' | '.join(r)} |" for r in utility_rows(report)],
        "",
        f"- real+synthetic minus real-only {head.replace('_', ' ')} = {fmt(eff, 4)} -> **{eff['verdict']}**",
        f"- TSTR per class: {per_class}",
        "",
        "## Fidelity (lower = closer to real test images)",
        "",
        "| | FID | KID x 1000 |",
        "|---|---|---|",
        f"| synthetic vs real test | {fid_['fid']:.3f} | {1000 * fid_['kid']['mean']:.3f} "
        f"+- {1000 * fid_['kid']['std']:.3f} |",
        f"| synthetic ({fid_['reference_size']:,} images) vs real test | {fid_['fid_at_reference_size']:.3f} | |",
        f"| real train vs real test (reference) | {fid_['fid_reference_real_train_vs_test']:.3f} | "
        f"{1000 * fid_['kid_reference_real_train_vs_test']['mean']:.3f} "
        f"+- {1000 * fid_['kid_reference_real_train_vs_test']['std']:.3f} |",
        "",
        f"Features: {feat.get('kind')} `{feat.get('file')}` (sha256 {str(feat.get('sha256'))[:16]}..."
        + (f", real-test accuracy {feat['test_accuracy']:.3f}" if "test_accuracy" in feat else "") + "). "
        f"KID over {fid_['kid']['subsets']} subsets of {fid_['kid']['subset_size']}. "
        "Compare FIDs only when made with the same feature file and sample sizes. The default extractor learnt "
        "the real training images, so the reference can sit above a good generator's FID.",
    ]
    if fid_["per_class_fid"]:
        lines += ["", "Per-class FID: " + ", ".join(f"{c} {v:.2f}" for c, v in fid_["per_class_fid"].items())]
    if fid_.get("within_class_spread_ratio") is not None:
        lines += ["", f"Within-class spread, synthetic / real test (features): {fid_['within_class_spread_ratio']:.2f} "
                  "(1 = as varied as real images; well below 1 = per-class mode collapse): "
                  + ", ".join(f"{c} {v:.2f}" for c, v in fid_["per_class_spread_ratio"].items())]
    lines += [
        "",
        "## Privacy",
        "",
        f"- Nearest training image in feature space, median: synthetic {priv['feature_nn_synthetic_median']:.3f} vs "
        f"real holdout {priv['feature_nn_holdout_median']:.3f} (ratio {priv['feature_nn_ratio']:.2f}; below 1 means "
        "closer to training images than fresh real data is).",
        f"- Synthetic images closer than the holdout's 5th percentile: {priv['share_closer_than_holdout_p5']:.1%} "
        f"in features, {priv['pixel_share_closer_than_holdout_p5']:.1%} in pixels (5% expected).",
        f"- Pixel copies of training images: exact {priv['exact_copies']} (holdout: {priv['holdout_exact_copies']}), "
        f"near {priv['near_copies']} (closer than any real test image; {priv['near_copies_expected']:.1f} expected "
        f"by chance) of {priv['images_compared']} compared.",
        "",
        "## Quality",
        "",
        f"- Non-finite values: {qual['nonfinite_values']} (in {qual['images_with_nonfinite']} images); value range "
        f"[{_num(qual['min'])}, {_num(qual['max'])}], share outside [-1, 1]: {qual['share_outside_range']:.2%}; "
        f"constant images: {qual['constant_images']}.",
        "- Synthetic class counts: " + ", ".join(f"{c} {v}" for c, v in qual["synthetic_class_counts"].items())
        + (f" (missing: {qual['classes_missing_in_synthetic']})" if qual["classes_missing_in_synthetic"] else ""),
        "",
    ]
    return "\n".join(lines)


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def write_report(report: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """report.json and report.md in ``out_dir``, each written atomically."""
    out = Path(out_dir)
    return write_json(out / REPORT_JSON, report), write_text(out / REPORT_MD, to_markdown(report))


def flat_metrics(report: dict) -> dict[str, float]:
    """Scalars for logger.log_metrics: eval/<setting>/<metric>, eval/fidelity/*, eval/privacy/*, eval/quality/*."""
    util = report["utility"]
    out: dict[str, float] = {}
    for setting in SETTINGS:
        for metric, stat in util[setting].items():
            if metric != "per_class" and stat["mean"] is not None:
                out[f"eval/{setting}/{metric}"] = stat["mean"]
    eff = util[f"augmentation_effect_{util['headline']}"]
    if eff["mean"] is not None:
        out[f"eval/augmentation_effect/{util['headline']}"] = eff["mean"]
    fid_ = report["fidelity"]
    out["eval/fidelity/fid"] = fid_["fid"]
    out["eval/fidelity/kid"] = fid_["kid"]["mean"]
    out["eval/fidelity/fid_reference"] = fid_["fid_reference_real_train_vs_test"]
    out["eval/fidelity/kid_reference"] = fid_["kid_reference_real_train_vs_test"]["mean"]
    if fid_.get("within_class_spread_ratio") is not None:
        out["eval/fidelity/within_class_spread_ratio"] = fid_["within_class_spread_ratio"]
    for k in ("feature_nn_ratio", "share_closer_than_holdout_p5", "pixel_nn_ratio", "exact_copies", "near_copies"):
        out[f"eval/privacy/{k}"] = float(report["privacy"][k])
    for k in ("nonfinite_values", "share_outside_range", "constant_images"):
        out[f"eval/quality/{k}"] = float(report["quality"][k])
    return out
