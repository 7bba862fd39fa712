"""Evaluation metrics give the right answer on cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from datamodules.table_schema import TableSchema
from evaluation.fidelity import fidelity_scores, ks_complement, tv_complement
from evaluation.stats import mean_ci
from evaluation.tabular import TabularEvaluation
from scarce.errors import ConfigError, DataError

TASK = {"name": "late", "target": {"column": "arr_delay", "op": ">", "value": 15},
        "features": ["month", "dep_delay", "sched_dep_time", "carrier", "origin", "distance"]}


def kinds_of(df):
    return {c.name: c.kind for c in TableSchema.infer(df, {"tailnum": "identifier"}).columns.values()}


def test_ks_and_tv_known_values():
    a = np.arange(100, dtype=float)
    assert ks_complement(a, a) == 1.0
    assert ks_complement(a, a + 50) == pytest.approx(0.5)
    assert ks_complement(a, np.r_[a[:50], np.full(50, np.nan)]) == pytest.approx(0.5 * 0.5)  # missing rate counts
    r = pd.Series(["x"] * 75 + ["y"] * 25)
    s = pd.Series(["x"] * 50 + ["y"] * 50)
    assert tv_complement(r, s) == pytest.approx(0.75)


def test_mean_ci_matches_scipy():
    v = [0.81, 0.79, 0.84, 0.80]
    out = mean_ci(v)
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert out["mean"] == pytest.approx(np.mean(v))
    assert out["ci95"] == pytest.approx([lo, hi])


def test_fidelity_separates_real_from_independent_columns(flights):
    kinds = kinds_of(flights)
    a, b = flights.sample(10_000, random_state=0), flights.sample(10_000, random_state=1)
    rng = np.random.default_rng(0)
    independent = pd.DataFrame({c: b[c].to_numpy()[rng.permutation(len(b))] for c in b})  # marginals kept
    same = fidelity_scores(a, b, kinds)
    ind = fidelity_scores(a, independent, kinds)
    assert same["column_shapes"] > 0.97 and ind["column_shapes"] > 0.97
    assert same["column_pair_trends"] > ind["column_pair_trends"] + 0.02
    assert same["per_pair"]["dep_delay|arr_delay"] > 0.99 > ind["per_pair"]["dep_delay|arr_delay"] + 0.3


def test_tstr_protocol_and_privacy_on_known_cases(flights):
    df = flights.sample(9000, random_state=2).reset_index(drop=True)
    train, test, holdout = df.iloc[:3000], df.iloc[3000:6000], df.iloc[6000:]
    kinds = kinds_of(df)
    ev = TabularEvaluation(TASK, seeds=[0, 1, 2], progress=False, privacy_rows=500)
    # "synthetic" = fresh real rows: TSTR must be as good as TRTR, distances like a holdout's, no exact copies
    rep = ev.run(train, test, holdout.assign(tailnum=None), kinds)
    for learner in ("logreg", "hgb"):
        trtr, tstr = rep["utility"][learner]["TRTR"]["auc"]["mean"], rep["utility"][learner]["TSTR"]["auc"]["mean"]
        assert trtr > 0.85 and abs(trtr - tstr) < 0.03
    assert 0.7 < rep["privacy"]["dcr_ratio"] < 1.4
    assert rep["privacy"]["exact_copies"] == 0
    # "synthetic" = copies of training rows (with their real tail numbers): privacy must flag both
    leak = ev.run(train, test, train.copy(), kinds)
    assert leak["privacy"]["exact_copies"] == leak["privacy"]["rows_compared"]
    assert leak["privacy"]["dcr_ratio"] < 0.05
    assert leak["privacy"]["identifier_leaks_total"] == train["tailnum"].notna().sum()
    # "synthetic" = labels shuffled against features: TSTR falls to chance
    noise = holdout.copy()
    noise["arr_delay"] = noise["arr_delay"].sample(frac=1, random_state=0).to_numpy()
    chance = ev.run(train, test, noise, kinds)
    assert abs(chance["utility"]["hgb"]["TSTR"]["auc"]["mean"] - 0.5) < 0.05
    eff = chance["utility"]["hgb"]["augmentation_effect_auc"]
    assert eff["verdict"] in ("synthetic data hurt", "no clear difference") and eff["mean"] < 0


def test_task_config_errors(flights):
    kinds = kinds_of(flights)
    df = flights.head(2000)
    with pytest.raises(DataError, match=r"evaluation.task.features: unknown column 'nope'"):
        TabularEvaluation({**TASK, "features": ["nope"]}, progress=False).run(df, df, df, kinds)
    with pytest.raises(ConfigError, match="leakage"):
        TabularEvaluation({**TASK, "features": ["arr_delay"]}, progress=False).run(df, df, df, kinds)
    with pytest.raises(ConfigError, match="evaluation.learners='svm'"):
        TabularEvaluation(TASK, learners=["svm"])
    with pytest.raises(ConfigError, match=r"op='=>'"):
        TabularEvaluation({**TASK, "target": {"column": "arr_delay", "op": "=>", "value": 1}},
                          progress=False).run(df, df, df, kinds)
