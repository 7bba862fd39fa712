"""Fidelity of a synthetic table to a real one: marginals and pairwise trends, each a similarity in [0, 1].

Column shapes: 1 - Kolmogorov-Smirnov statistic (numeric) or 1 - total-variation distance (categorical), with
missing values compared as their own rate. Pair trends: 1 - |r_real - r_syn| / 2 for two numeric columns (Pearson),
else 1 - TVD of the joint distribution, numerics binned at the real deciles. The same definitions as SDMetrics'
quality report (KSComplement, TVComplement, CorrelationSimilarity, ContingencySimilarity), computed here with numpy.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import pandas as pd

from datamodules.table_schema import to_datetime

NUMERIC = ("continuous", "integer", "datetime")
CATEGORICAL = ("categorical", "boolean")
N_BINS = 10


def _numeric(s: pd.Series, kind: str) -> np.ndarray:
    if kind == "datetime":
        ts = to_datetime(s)
        return ((ts - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)


def _levels(s: pd.Series) -> pd.Series:
    return s.astype(object).where(s.notna(), "__nan__").astype(str)


def ks_complement(real: np.ndarray, syn: np.ndarray) -> float:
    """1 - sup |F_real - F_syn| over the non-missing values, times the share both have non-missing."""
    r, s = real[~np.isnan(real)], syn[~np.isnan(syn)]
    if len(r) == 0 or len(s) == 0:
        return float(len(r) == len(s))
    grid = np.union1d(r, s)
    fr = np.searchsorted(np.sort(r), grid, side="right") / len(r)
    fs = np.searchsorted(np.sort(s), grid, side="right") / len(s)
    null_gap = abs(np.isnan(real).mean() - np.isnan(syn).mean())
    return float((1 - np.abs(fr - fs).max()) * (1 - null_gap))


def tv_complement(real: pd.Series, syn: pd.Series) -> float:
    pr = _levels(real).value_counts(normalize=True)
    ps = _levels(syn).value_counts(normalize=True)
    idx = pr.index.union(ps.index)
    return float(1 - 0.5 * np.abs(pr.reindex(idx, fill_value=0) - ps.reindex(idx, fill_value=0)).sum())


def _binned(real: np.ndarray, syn: np.ndarray) -> tuple[pd.Series, pd.Series]:
    edges = np.unique(np.nanquantile(real, np.linspace(0, 1, N_BINS + 1)[1:-1])) if np.isfinite(real).any() else []

    def cut(x: np.ndarray) -> pd.Series:
        b = np.searchsorted(edges, x, side="right").astype(object)
        b[np.isnan(x)] = "nan"
        return pd.Series(b).astype(str)

    return cut(real), cut(syn)


def fidelity_scores(
    real: pd.DataFrame, synthetic: pd.DataFrame, kinds: Mapping[str, str], max_rows: int = 20_000, seed: int = 0
) -> dict:
    """Column-shape and pair-trend similarities; ``kinds`` maps modelled columns to their schema kind."""
    cols = [c for c, k in kinds.items() if k in NUMERIC + CATEGORICAL and c in real and c in synthetic]
    rng = np.random.default_rng(seed)
    r = real.iloc[rng.permutation(len(real))[:max_rows]].reset_index(drop=True)
    s = synthetic.iloc[rng.permutation(len(synthetic))[:max_rows]].reset_index(drop=True)
    num = {c: (_numeric(r[c], kinds[c]), _numeric(s[c], kinds[c])) for c in cols if kinds[c] in NUMERIC}
    shapes = {}
    for c in cols:
        shapes[c] = ks_complement(*num[c]) if c in num else tv_complement(r[c], s[c])
    discrete = {}
    for c in cols:
        discrete[c] = _binned(*num[c]) if c in num else (_levels(r[c]), _levels(s[c]))
    pairs = {}
    for a, b in itertools.combinations(cols, 2):
        if a in num and b in num:
            (ra, sa), (rb, sb) = num[a], num[b]  # (real, synthetic) of each column
            cr, cs = _corr(ra, rb), _corr(sa, sb)
            pairs[f"{a}|{b}"] = 1 - abs(cr - cs) / 2
        else:
            jr = (discrete[a][0] + "\x1f" + discrete[b][0]).value_counts(normalize=True)
            js = (discrete[a][1] + "\x1f" + discrete[b][1]).value_counts(normalize=True)
            idx = jr.index.union(js.index)
            pairs[f"{a}|{b}"] = float(1 - 0.5 * np.abs(jr.reindex(idx, fill_value=0) - js.reindex(idx, fill_value=0)).sum())
    shape_mean = float(np.mean(list(shapes.values()))) if shapes else float("nan")
    pair_mean = float(np.mean(list(pairs.values()))) if pairs else float("nan")
    return {
        "column_shapes": shape_mean,
        "column_pair_trends": pair_mean,
        "overall": float(np.nanmean([shape_mean, pair_mean])),
        "per_column": shapes,
        "per_pair": pairs,
    }


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return 0.0
    return float(np.corrcoef(a[ok], b[ok])[0, 1])
