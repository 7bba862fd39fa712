"""FID and KID from feature matrices, in float64.

FID: Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium":
``||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))`` with the unbiased (n - 1) covariances.
KID: Binkowski et al. 2018, "Demystifying MMD GANs": the unbiased MMD^2 estimate with the kernel
``k(x, y) = (x.y / d + 1)^3``, averaged over random equal-size subsets of both sets.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

from scarce.errors import DataError

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def _as_f64(x: torch.Tensor | np.ndarray, key: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise DataError(f"{key}: expected a (N, D) feature matrix, got shape {tuple(a.shape)}")
    if len(a) < 2:
        raise DataError(f"{key}: FID/KID need at least 2 samples, got {len(a)}")
    return a


def gaussian_stats(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and unbiased covariance (D, D), float64."""
    f = _as_f64(features, "features")
    return f.mean(0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Frechet distance between N(mu1, s1) and N(mu2, s2) (squared units of the features)."""
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():
        # a singular product (fewer samples than dimensions): regularise as is customary, by a tiny ridge
        eps = 1e-6 * np.eye(len(s1))
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    # sqrtm of a product of PSD matrices is real in exact arithmetic; rounding leaves tiny imaginary parts
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def fid(real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray) -> float:
    """FID between (N, D) real features and (M, D) fake features; 0 for identical sets."""
    r, f = _as_f64(real, "real features"), _as_f64(fake, "fake features")
    if r.shape[1] != f.shape[1]:
        raise DataError(f"real features have {r.shape[1]} dimensions, fake features {f.shape[1]}")
    return max(frechet_distance(*gaussian_stats(r), *gaussian_stats(f)), 0.0)


def _poly_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 of two equal-size (m, d) samples under k(a, b) = (a.b / d + 1)^3."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    # the within-set sums leave out the diagonal (a sample's kernel with itself), which is what makes it unbiased
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kid(real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray, subsets: int = KID_SUBSETS,
        subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> dict:
    """KID over ``subsets`` random subsets: {"mean", "std" (population, over subsets), "subsets", "subset_size"}.

    ``subset_size`` is capped at min(N, M). Subsets are drawn as ``torch.randperm`` calls on one generator seeded
    with ``seed``, alternating real then fake, so the numbers are reproducible (and equal torchmetrics'
    ``KernelInceptionDistance`` run after ``torch.manual_seed(seed)``).
    """
    r = torch.from_numpy(_as_f64(real, "real features"))
    f = torch.from_numpy(_as_f64(fake, "fake features"))
    if r.shape[1] != f.shape[1]:
        raise DataError(f"real features have {r.shape[1]} dimensions, fake features {f.shape[1]}")
    if subsets < 1 or subset_size < 2:
        raise DataError(f"KID needs subsets >= 1 and subset_size >= 2, got subsets={subsets}, "
                        f"subset_size={subset_size}")
    size = min(subset_size, len(r), len(f))
    g = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        ir = torch.randperm(len(r), generator=g)[:size]
        jf = torch.randperm(len(f), generator=g)[:size]
        scores.append(_poly_mmd2(r[ir], f[jf]))
    s = np.asarray(scores)
    return {"mean": float(s.mean()), "std": float(s.std()), "subsets": int(subsets), "subset_size": int(size)}
