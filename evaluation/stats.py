"""Means with 95% intervals over seeds (Student t), the form every report metric takes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from scarce.errors import ConfigError, check_range


def mean_ci(values: Sequence[float], level: float = 0.95, bounds: tuple[float, float] | None = None) -> dict:
    """{"mean", "ci95": [lo, hi], "n", "values"}; the t interval of the mean (n >= 2), clipped to ``bounds``.

    With few seeds the t interval is wide (t = 12.7 for two seeds); clipping keeps it inside the metric's range."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"mean": None, "ci95": [None, None], "n": 0, "values": []}
    m = float(v.mean())
    if len(v) < 2:
        return {"mean": m, "ci95": [None, None], "n": 1, "values": v.tolist()}
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    lo, hi = m - half, m + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": m, "ci95": [lo, hi], "n": int(len(v)), "values": v.tolist()}


def paired_effect(baseline: Sequence[float], variant: Sequence[float]) -> dict:
    """Mean [95% interval] of variant - baseline over paired seeds, with a verdict on whether synthetic data helped."""
    diff = mean_ci(np.asarray(variant, dtype=np.float64) - np.asarray(baseline, dtype=np.float64))
    lo, hi = diff["ci95"]
    if lo is None:
        verdict = "one seed: no interval"
    elif lo > 0:
        verdict = "synthetic data helped"
    elif hi < 0:
        verdict = "synthetic data hurt"
    else:
        verdict = "no clear difference"
    return {**diff, "verdict": verdict}


def fmt(stat: dict, digits: int = 3) -> str:
    """'0.812 [0.801, 0.823]' for a mean_ci dict."""
    if stat.get("mean") is None:
        return "n/a"
    lo, hi = stat["ci95"]
    if lo is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def classifier_settings(given: dict | None, defaults: dict) -> dict:
    """``evaluation.classifier`` over its defaults, checked: known keys only, width >= 8, steps >= 1, lr > 0,
    batch_size >= 2 (as in every domain's CNN evaluation)."""
    cfg = dict(given or {})
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise ConfigError(f"evaluation.classifier.{unknown[0]} is not a setting; expected some of {sorted(defaults)}")
    out = {**defaults, **cfg}
    check_range("evaluation.classifier.width", out["width"], 8, integer=True)
    check_range("evaluation.classifier.steps", out["steps"], 1, integer=True)
    check_range("evaluation.classifier.lr", out["lr"], 0.0, low_inclusive=False)
    check_range("evaluation.classifier.batch_size", out["batch_size"], 2, integer=True)
    return out


def checked_seeds(seeds: Sequence[int]) -> list[int]:
    """``evaluation.seeds`` as ints; at least one."""
    if len(seeds) < 1:
        raise ConfigError("evaluation.seeds=[] is not allowed; give at least one seed (3 or more for intervals)")
    return [int(s) for s in seeds]
