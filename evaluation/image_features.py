"""Offline feature extractors for FID/KID and feature-space privacy, and the SmallCNN training loop they share.

An extractor is an object chosen in the config by ``_target_`` (``evaluation.features``); null means the default,
a :class:`TrainedCNNFeatures` fitted on the real training split. Every extractor has the same three methods:
``fit(...)`` (once per evaluation run, before any features are asked for), ``__call__(images) -> (N, D) float64``
and ``describe() -> dict`` (what the report records so the numbers can be traced to a network).
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from models.nets.classifier import SmallCNN
from scarce.errors import ConfigError, DataError, check_choice, check_range
from scarce.io import atomic_path, sha256_file

log = logging.getLogger(__name__)

EXTRACTOR_FILE = "feature_extractor.pt"
INCEPTION_FEATURES = (64, 192, 768, 2048)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as given."""
    return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                        ("cpu" if device == "auto" else device))


# ------------------------------------------------------------------------------------------ SmallCNN training
def fit_small_cnn(images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, width: int = 32,
                  feature_dim: int = 128, steps: int = 300, lr: float = 2e-3, batch_size: int = 64, seed: int = 0,
                  device: str | torch.device = "cpu") -> SmallCNN:
    """Train a fresh SmallCNN for exactly ``steps`` minibatch steps on (N, C, H, W) images in [-1, 1].

    labels: (N,) int64 class index (cross-entropy) or (N, K) {0, 1} multi-label (binary cross-entropy). Batches are
    drawn with replacement from a generator seeded with ``seed``, and the weights are initialised under the same
    seed, so a fit is reproducible and every setting gets the same compute whatever its data size.
    """
    device = torch.device(device)
    multi = labels.ndim == 2
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's global RNG
        torch.manual_seed(seed)
        model = SmallCNN(images.shape[1], num_classes, width, feature_dim).to(device)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    # cosine decay to zero: the last steps settle the weights, so accuracy varies less between seeds
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (min(batch_size, len(images)),), generator=g)
        x, y = images[idx].to(device), labels[idx].to(device)
        logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits, y.float()) if multi else F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def predict(model: SmallCNN, images: torch.Tensor, batch_size: int = 512, what: str = "logits") -> torch.Tensor:
    """(N, C, H, W) -> (N, num_classes) logits, or (N, feature_dim) features with what="features"; on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    fn = model.features if what == "features" else model
    return torch.cat([fn(images[i:i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)])


def classification_scores(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Test scores of (N, K) logits against labels (N,) or (N, K) multi-hot.

    Single-label: accuracy, balanced_accuracy (mean recall over the classes present) and per_class (recall, by
    index). Multi-label: auc_macro (mean ROC AUC over labels with both values present), accuracy (label-wise at
    p = 0.5) and per_class (AUC by index; None where a label has one value only).
    """
    if labels.ndim == 2:
        y = labels.numpy().astype(np.int64)
        p = torch.sigmoid(logits.double()).numpy()
        per = [float(roc_auc_score(y[:, k], p[:, k])) if 0 < y[:, k].sum() < len(y) else None
               for k in range(num_classes)]
        seen = [a for a in per if a is not None]
        return {"auc_macro": float(np.mean(seen)) if seen else None, "accuracy": float(((p >= 0.5) == y).mean()),
                "per_class": per}
    pred = logits.argmax(1)
    per = [float((pred[labels == k] == k).float().mean()) if (labels == k).any() else None for k in range(num_classes)]
    seen = [a for a in per if a is not None]
    return {"accuracy": float((pred == labels).float().mean()), "balanced_accuracy": float(np.mean(seen)),
            "per_class": per}


# ------------------------------------------------------------------------------------------------ extractors
class FeatureExtractor:
    """Images -> feature vectors; the interface every ``evaluation.features`` target implements."""

    def fit(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, test: tuple[torch.Tensor, torch.Tensor],
            out_dir: str | Path) -> None:
        """Prepare on the real training split (N, C, H, W) in [-1, 1]; ``test`` is only scored, never fitted."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1] -> (N, D) float64 features."""
        raise NotImplementedError

    def describe(self) -> dict:
        """What the report records about this extractor (kind, file, hash, scores)."""
        raise NotImplementedError


class TrainedCNNFeatures(FeatureExtractor):
    """A SmallCNN trained to classify the REAL training split; its penultimate layer gives the features.

    Domain-specific and fully offline (no downloaded weights). The weights are saved to ``<out_dir>/<file>`` (state
    dict + meta, torch.save, written atomically) and the report names that file, its SHA-256 and the network's
    accuracy on the real test split, so a FID is only compared with FIDs from the same file.
    """

    def __init__(self, width: int = 32, feature_dim: int = 128, steps: int = 300, lr: float = 2e-3,
                 batch_size: int = 64, seed: int = 0, file: str = EXTRACTOR_FILE, device: str = "auto"):
        self.width = check_range("evaluation.features.width", width, 8, integer=True)
        if width % 8:
            raise ConfigError(f"evaluation.features.width={width} is not allowed; expected a multiple of 8")
        self.feature_dim = check_range("evaluation.features.feature_dim", feature_dim, 2, integer=True)
        self.steps = check_range("evaluation.features.steps", steps, 1, integer=True)
        self.lr = check_range("evaluation.features.lr", lr, 0.0, low_inclusive=False)
        self.batch_size = check_range("evaluation.features.batch_size", batch_size, 2, integer=True)
        self.seed, self.file, self.device = int(seed), str(file), resolve_device(device)
        self.model: SmallCNN | None = None
        self.scale = 1.0
        self.info: dict[str, Any] = {}

    def fit(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, test: tuple[torch.Tensor, torch.Tensor],
            out_dir: str | Path) -> None:
        model = fit_small_cnn(images, labels, num_classes, width=self.width, feature_dim=self.feature_dim,
                              steps=self.steps, lr=self.lr, batch_size=self.batch_size, seed=self.seed,
                              device=self.device)
        scores = classification_scores(predict(model, test[0]), test[1], num_classes)
        # one scalar so features have unit RMS on the real train split: KID's kernel (x.y/d + 1)^3 assumes O(1)
        # coordinates (as Inception's are); raw logit-layer features can be 10x larger and make KID all variance
        raw = predict(model, images, what="features").double()
        scale = float(1.0 / raw.pow(2).mean().sqrt().clamp_min(1e-12))
        meta = {"in_channels": int(images.shape[1]), "num_classes": int(num_classes), "width": self.width,
                "feature_dim": self.feature_dim, "steps": self.steps, "lr": self.lr, "batch_size": self.batch_size,
                "seed": self.seed, "image_size": list(images.shape[2:]), "multi_label": bool(labels.ndim == 2),
                "test_accuracy": scores["accuracy"], "feature_scale": scale}
        path = Path(out_dir) / self.file
        # through a buffer: torch.save names its zip records after the target file, and the temp name is random,
        # so saving to the temp path directly would give identical weights a different SHA-256 each run
        buf = io.BytesIO()
        torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "meta": meta}, buf)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.getvalue())
        self._use(model, meta, path)
        log.info("feature extractor: %s (sha256 %s), real-test accuracy %.3f", path, self.info["sha256"][:12],
                 scores["accuracy"])

    def _use(self, model: SmallCNN, meta: dict, path: Path) -> None:
        self.model, self.scale = model.to(self.device), meta["feature_scale"]
        self.info = {"kind": "trained_small_cnn", "file": str(path), "sha256": sha256_file(path),
                     "test_accuracy": meta["test_accuracy"], "feature_dim": meta["feature_dim"],
                     "steps": meta["steps"]}

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> TrainedCNNFeatures:
        """A fitted extractor from a file written by :meth:`fit` (weights_only load: no code runs from the file)."""
        model, meta = load_small_cnn(path)
        out = cls(meta["width"], meta["feature_dim"], meta["steps"], meta["lr"], meta["batch_size"], meta["seed"],
                  Path(path).name, device)
        out._use(model, meta, Path(path))
        return out

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("TrainedCNNFeatures.fit (or .load) must run before features are extracted")
        return predict(self.model, images, what="features").double() * self.scale

    def describe(self) -> dict:
        return dict(self.info)


def load_small_cnn(path: str | Path, key: str = "evaluation.features.file") -> tuple[SmallCNN, dict]:
    """Rebuild a saved extractor (weights_only load: no code runs from the file) -> (model in eval mode, meta)."""
    if not Path(path).is_file():
        raise DataError(f"{key}={str(path)!r}: no such file")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    meta = blob["meta"]
    model = SmallCNN(meta["in_channels"], meta["num_classes"], meta["width"], meta["feature_dim"])
    model.load_state_dict(blob["state_dict"])
    return model.eval(), meta


class InceptionFeatures(FeatureExtractor):
    """InceptionV3 (the FID network, torch-fidelity's port of the TF weights) from a LOCAL weights file.

    Images are quantised to uint8, grayscale is repeated to 3 channels, and the network resizes to 299x299 itself
    (torchmetrics' ``NoTrainInceptionV3``, bilinear with antialiasing). Needs ``torch-fidelity`` installed; the
    weights file is the ``weights-inception-2015-12-05-6726825d.pth`` state dict that torch-fidelity would download.
    """

    def __init__(self, weights_path: str, feature: int = 2048, batch_size: int = 64, device: str = "auto"):
        self.weights_path = str(weights_path)
        if not Path(self.weights_path).is_file():
            raise DataError(f"evaluation.features.weights_path={self.weights_path!r}: no such file. Evaluation runs "
                            "offline: download the torch-fidelity InceptionV3 weights "
                            "(weights-inception-2015-12-05-6726825d.pth) once and point this key at it, or set "
                            "evaluation.features=null for the SmallCNN trained on the real data")
        self.feature = check_choice("evaluation.features.feature", feature, INCEPTION_FEATURES)
        self.batch_size = check_range("evaluation.features.batch_size", batch_size, 1, integer=True)
        self.device = resolve_device(device)
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
            net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(feature)],
                                     feature_extractor_weights_path=self.weights_path)
        except ModuleNotFoundError as e:
            raise ConfigError("evaluation.features: InceptionFeatures needs torch-fidelity "
                              "(pip install torch-fidelity); or set evaluation.features=null") from e
        self.net = net.to(self.device)
        self.sha256 = sha256_file(self.weights_path)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] not in (1, 3):
            raise DataError(f"InceptionFeatures needs 1- or 3-channel images, got {images.shape[1]} channels")
        out = []
        for i in range(0, len(images), self.batch_size):
            x = ((images[i:i + self.batch_size].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            out.append(self.net(x.to(self.device)).double().cpu())
        return torch.cat(out)

    def describe(self) -> dict:
        return {"kind": "inception_v3", "file": self.weights_path, "sha256": self.sha256, "feature": self.feature}
