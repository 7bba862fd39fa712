"""Train-on-synthetic / test-on-real for tables, with fidelity, privacy and quality in one report.

Protocol: for each seed, a downstream learner is fitted on a bootstrap resample of (a) the real training split
(TRTR), (b) the synthetic table (TSTR), (c) both together (augmentation), and tested on the real test split, which the
generator never saw. Means and 95% intervals over seeds; the augmentation effect is the paired difference to TRTR.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from evaluation.fidelity import CATEGORICAL, NUMERIC, _numeric, fidelity_scores
from evaluation.report import flat_metrics as report_metrics
from evaluation.report import to_markdown as report_markdown
from evaluation.report import utility_rows
from evaluation.stats import checked_seeds, mean_ci, paired_effect
from scarce.errors import ConfigError, DataError, bad_choice, check_range, unknown_columns
from scarce.io import read_table

log = logging.getLogger(__name__)

SETTINGS = {"TRTR": "real train", "TSTR": "synthetic", "TRSTR": "real + synthetic"}
LEARNERS = ("logreg", "hgb")
EXACT = 1e-6  # distances below this count as copies (brute-force euclidean is exact only to ~1e-8)
OPS = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal, "==": np.equal,
       "!=": np.not_equal}


class BinaryTask:
    """A downstream classification task: a target derived from one column, and the features allowed to predict it."""

    def __init__(self, name: str, target: Mapping[str, Any], features: Sequence[str], kinds: Mapping[str, str]):
        self.name = name
        self.column = target.get("column")
        self.op = target.get("op", "==")
        self.value = target.get("value")
        if self.op not in OPS:
            raise bad_choice("evaluation.task.target.op", self.op, OPS)
        if self.column not in kinds:
            raise unknown_columns("evaluation.task.target.column", [self.column], kinds)
        missing = [f for f in features if f not in kinds]
        if missing:
            raise unknown_columns("evaluation.task.features", missing, kinds)
        if self.column in features:
            raise ConfigError(f"evaluation.task.features includes the target column {self.column!r} (leakage)")
        self.features = list(features)
        self.kinds = dict(kinds)

    def xy(self, df: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """Features and 0/1 labels; rows whose target is missing are dropped."""
        col = df[self.column]
        keep = col.notna().to_numpy()
        if self.kinds[self.column] in NUMERIC:
            y = OPS[self.op](pd.to_numeric(col[keep]).to_numpy(dtype=np.float64), float(self.value))
        else:
            y = OPS[self.op](col[keep].astype(str).to_numpy(), str(self.value))
        x = df.loc[keep, self.features].reset_index(drop=True)
        for f in self.features:
            if self.kinds[f] in NUMERIC:
                x[f] = _numeric(x[f], self.kinds[f])
            else:
                x[f] = x[f].astype(object).where(x[f].notna(), "__nan__").astype(str)
        return x, y.astype(np.int64)

    def describe(self) -> str:
        return f"{self.column} {self.op} {self.value}"


def make_learner(name: str, numeric: list[str], categorical: list[str], seed: int) -> Pipeline:
    """A scikit-learn pipeline for the named learner (imputation and encoding included)."""
    if name == "logreg":
        pre = ColumnTransformer([
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore", min_frequency=5), categorical),
        ])
        return make_pipeline(pre, LogisticRegression(max_iter=500, random_state=seed))
    if name == "hgb":
        pre = ColumnTransformer([
            ("num", "passthrough", numeric),
            ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                   encoded_missing_value=-1), categorical),
        ], verbose_feature_names_out=False)
        cat_mask = [False] * len(numeric) + [True] * len(categorical)
        return make_pipeline(pre, HistGradientBoostingClassifier(
            max_iter=100, categorical_features=cat_mask, random_state=seed, early_stopping=False))
    raise bad_choice("evaluation.learners", name, LEARNERS)


class TabularEvaluation:
    """Runs the TSTR protocol and the fidelity, privacy and quality checks; returns the report as data."""

    def __init__(
        self,
        task: Mapping[str, Any],
        learners: Sequence[str] = LEARNERS,
        seeds: Sequence[int] = (0, 1, 2),
        max_train_rows: int | None = 50_000,
        fidelity_rows: int = 20_000,
        privacy_rows: int = 2_000,
        progress: bool = True,
    ):
        self.task_cfg = dict(task)
        for learner in learners:
            if learner not in LEARNERS:
                raise bad_choice("evaluation.learners", learner, LEARNERS)
        self.learners = list(learners)
        self.seeds = checked_seeds(seeds)
        self.max_train_rows = check_range("evaluation.max_train_rows", max_train_rows, 10, integer=True,
                                          allow_none=True)
        self.fidelity_rows = check_range("evaluation.fidelity_rows", fidelity_rows, 10, integer=True)
        self.privacy_rows = check_range("evaluation.privacy_rows", privacy_rows, 10, integer=True)
        self.progress = progress

    def task(self, kinds: Mapping[str, str]) -> BinaryTask:
        """The downstream task on a table with these column kinds (unknown columns are a clear error)."""
        modelled = [c for c, k in kinds.items() if k in NUMERIC + CATEGORICAL]
        target = self.task_cfg.get("target") or {}
        features = self.task_cfg.get("features") or [c for c in modelled if c != target.get("column")]
        return BinaryTask(self.task_cfg.get("name", "task"), target, features, kinds)

    # ------------------------------------------------------------------ the evaluator protocol train.py uses
    def check(self, datamodule) -> None:
        """Fail before training if the task's columns are not in the datamodule's table."""
        self.task(datamodule.schema.kinds())

    def evaluate(self, datamodule, synthetic: str | Path | pd.DataFrame, out_dir: str | Path | None = None) -> dict:
        """The report for a synthetic table (a path or a DataFrame) against the datamodule's real splits."""
        syn = read_table(synthetic, key="synthetic") if isinstance(synthetic, (str, Path)) else synthetic
        datamodule.setup("fit")
        return self.run(datamodule.real("train"), datamodule.real("test"), syn, datamodule.schema.kinds(),
                        datamodule.real_identifiers())

    to_markdown = staticmethod(report_markdown)
    flat_metrics = staticmethod(report_metrics)

    @staticmethod
    def utility_table(report: dict) -> pd.DataFrame:
        return pd.DataFrame(utility_rows(report), columns=["learner", "trained on", "AUC", "accuracy"])

    # ------------------------------------------------------------------------------------------------- run
    def run(
        self,
        real_train: pd.DataFrame,
        real_test: pd.DataFrame,
        synthetic: pd.DataFrame,
        kinds: Mapping[str, str],
        real_identifiers: Mapping[str, Sequence[Any]] | None = None,
    ) -> dict:
        """The full report: ``utility``, ``fidelity``, ``privacy``, ``quality`` sections plus ``meta``."""
        modelled = {c: k for c, k in kinds.items() if k in NUMERIC + CATEGORICAL}
        missing = [c for c in modelled if c not in synthetic.columns]
        if missing:
            raise DataError(f"synthetic table lacks modelled columns {missing}; was it made from this dataset?")
        task = self.task(kinds)
        return {
            "meta": {"task": task.name, "target": task.describe(), "features": task.features,
                     "rows": {"real_train": len(real_train), "real_test": len(real_test), "synthetic": len(synthetic)},
                     "seeds": self.seeds, "learners": self.learners},
            "utility": self.utility(task, real_train, real_test, synthetic),
            "fidelity": fidelity_scores(real_test, synthetic, modelled, max_rows=self.fidelity_rows),
            "privacy": self.privacy(real_train, real_test, synthetic, modelled, kinds, real_identifiers or {}),
            "quality": quality(real_train, synthetic, kinds),
        }

    def utility(self, task: BinaryTask, train: pd.DataFrame, test: pd.DataFrame, synthetic: pd.DataFrame) -> dict:
        x_test, y_test = task.xy(test)
        if len(np.unique(y_test)) < 2:
            raise DataError(f"task {task.describe()!r} has a single class in the real test split; AUC is undefined")
        sources = {"TRTR": [task.xy(train)], "TSTR": [task.xy(synthetic)],
                   "TRSTR": [task.xy(train), task.xy(synthetic)]}
        numeric = [f for f in task.features if task.kinds[f] in NUMERIC]
        categorical = [f for f in task.features if f not in numeric]
        out: dict[str, Any] = {"positive_rate_test": float(y_test.mean()),
                               "positive_rate": {s: float(np.concatenate([y for _, y in parts]).mean())
                                                 for s, parts in sources.items()}}
        jobs = [(lr, s, seed) for lr in self.learners for s in SETTINGS for seed in self.seeds]
        scores: dict[tuple[str, str], dict[str, list[float]]] = {}
        for learner, setting, seed in tqdm(jobs, desc="TSTR fits", disable=not self.progress, leave=False):
            rng = np.random.default_rng(seed)
            xs, ys = [], []
            for x, y in sources[setting]:  # bootstrap each part: seeds vary the training sample, not just the learner
                cap = len(x) if self.max_train_rows is None else min(len(x), self.max_train_rows)
                idx = rng.integers(0, len(x), size=cap)
                xs.append(x.iloc[idx])
                ys.append(y[idx])
            x_tr, y_tr = pd.concat(xs, ignore_index=True), np.concatenate(ys)
            rec = scores.setdefault((learner, setting), {"auc": [], "accuracy": []})
            if len(np.unique(y_tr)) < 2:
                log.warning("%s/%s seed %d: a single class in training data; scored as chance", learner, setting, seed)
                rec["auc"].append(0.5)
                rec["accuracy"].append(float(max(y_test.mean(), 1 - y_test.mean())))
                continue
            model = make_learner(learner, numeric, categorical, seed)
            # One OpenMP thread: torch brings its own OpenMP runtime, and two spinning pools on few cores can make
            # a gradient-boosting fit 100x slower than it should be.
            with warnings.catch_warnings(), threadpool_limits(1, user_api="openmp"):
                warnings.simplefilter("ignore")
                model.fit(x_tr, y_tr)
                p = model.predict_proba(x_test)[:, 1]
            rec["auc"].append(float(roc_auc_score(y_test, p)))
            rec["accuracy"].append(float(accuracy_score(y_test, p >= 0.5)))
        for (learner, setting), rec in scores.items():
            out.setdefault(learner, {})[setting] = {k: mean_ci(v, bounds=(0.0, 1.0)) for k, v in rec.items()}
        for learner in self.learners:
            out[learner]["augmentation_effect_auc"] = paired_effect(scores[(learner, "TRTR")]["auc"],
                                                                     scores[(learner, "TRSTR")]["auc"])
        return out

    def privacy(self, train: pd.DataFrame, test: pd.DataFrame, synthetic: pd.DataFrame, modelled: Mapping[str, str],
                kinds: Mapping[str, str], real_identifiers: Mapping[str, Sequence[Any]]) -> dict:
        """Distance to closest training record for synthetic rows vs real holdout rows; identifier leaks."""
        rng = np.random.default_rng(0)
        ref = train.iloc[rng.permutation(len(train))[: max(self.privacy_rows * 10, 20_000)]]
        enc = _RowEncoder(ref, modelled)
        nn = NearestNeighbors(n_neighbors=1).fit(enc(ref))
        syn_q = synthetic.iloc[rng.permutation(len(synthetic))[: self.privacy_rows]]
        hold_q = test.iloc[rng.permutation(len(test))[: self.privacy_rows]]
        d_syn = nn.kneighbors(enc(syn_q))[0][:, 0]
        d_hold = nn.kneighbors(enc(hold_q))[0][:, 0]
        p5 = float(np.quantile(d_hold, 0.05))
        leaks = {}
        for col, kind in kinds.items():
            if kind == "identifier" and col in synthetic:
                real = {str(v) for v in real_identifiers.get(col, train[col].dropna().astype(str).unique())}
                leaks[col] = int(synthetic[col].dropna().astype(str).isin(real).sum())
        return {
            "dcr_synthetic_median": float(np.median(d_syn)),
            "dcr_holdout_median": float(np.median(d_hold)),
            "dcr_ratio": float(np.median(d_syn) / max(np.median(d_hold), 1e-12)),
            "share_closer_than_holdout_p5": float((d_syn < p5).mean()),
            "exact_copies": int((d_syn < EXACT).sum()),
            "holdout_exact_copies": int((d_hold < EXACT).sum()),
            "rows_compared": int(len(d_syn)),
            "identifier_values_found": leaks,
            "identifier_leaks_total": int(sum(leaks.values())),
        }


class _RowEncoder:
    """Rows -> vectors for distances: robust-scaled numerics (missing -> own indicator), one-hot categoricals."""

    def __init__(self, ref: pd.DataFrame, modelled: Mapping[str, str]):
        self.kinds = dict(modelled)
        self.stats = {}
        for c, k in self.kinds.items():
            if k in NUMERIC:
                v = _numeric(ref[c], k)
                q1, med, q3 = np.nanquantile(v, [0.25, 0.5, 0.75]) if np.isfinite(v).any() else (0, 0, 1)
                self.stats[c] = (med, (q3 - q1) or (np.nanstd(v) or 1.0))
            else:
                self.stats[c] = ref[c].astype(object).where(ref[c].notna(), "__nan__").astype(str).value_counts().index
        self.cols = list(self.kinds)

    def __call__(self, df: pd.DataFrame) -> np.ndarray:
        parts = []
        for c in self.cols:
            if self.kinds[c] in NUMERIC:
                med, scale = self.stats[c]
                v = (_numeric(df[c], self.kinds[c]) - med) / scale
                parts += [np.nan_to_num(v, nan=0.0)[:, None], np.isnan(v)[:, None].astype(float)]
            else:
                levels = self.stats[c]
                s = df[c].astype(object).where(df[c].notna(), "__nan__").astype(str)
                parts.append((s.to_numpy()[:, None] == levels.to_numpy()[None, :]).astype(float) / np.sqrt(2))
        return np.hstack(parts)


def quality(real: pd.DataFrame, synthetic: pd.DataFrame, kinds: Mapping[str, str]) -> dict:
    """Constraint checks: ranges, integrality, unseen levels, missing-value rates."""
    out_of_range, non_integer, unseen, null_gap = {}, {}, {}, {}
    for c, k in kinds.items():
        if c not in synthetic or k in ("identifier",):
            continue
        null_gap[c] = float(abs(real[c].isna().mean() - synthetic[c].isna().mean()))
        if k in NUMERIC:
            r, s = _numeric(real[c], k), _numeric(synthetic[c], k)
            s = s[~np.isnan(s)]
            if np.isfinite(r).any():
                out_of_range[c] = int(((s < np.nanmin(r)) | (s > np.nanmax(r))).sum())
            if k == "integer":
                non_integer[c] = int((s != np.round(s)).sum())
        elif k in CATEGORICAL:
            seen = set(real[c].dropna().astype(str))
            unseen[c] = int((~synthetic[c].dropna().astype(str).isin(seen)).sum())
    return {
        "out_of_range_values": int(sum(out_of_range.values())),
        "non_integer_values": int(sum(non_integer.values())),
        "unseen_category_values": int(sum(unseen.values())),
        "max_null_rate_gap": float(max(null_gap.values(), default=0.0)),
        "per_column": {"out_of_range": out_of_range, "non_integer": non_integer, "unseen": unseen,
                       "null_rate_gap": null_gap},
    }
