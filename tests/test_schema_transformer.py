"""Schema detection and the invertible transformer, on real flights and on the awkward columns real tables have."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from datamodules.table_schema import TableSchema
from datamodules.table_transformer import TableTransformer
from scarce.errors import ConfigError, DataError


def fit(df: pd.DataFrame, **kw) -> TableTransformer:
    return TableTransformer(TableSchema.infer(df, kw.pop("overrides", None)), **kw).fit(df)


def test_detects_flights_kinds(flights):
    kinds = {c.name: c.kind for c in TableSchema.infer(flights.head(20_000)).columns.values()}
    assert kinds["tailnum"] == "identifier"  # 4k code-like values: detected without being declared
    assert kinds["time_hour"] == "datetime"
    assert kinds["carrier"] == kinds["origin"] == kinds["dest"] == "categorical"
    assert kinds["year"] == "constant"
    assert kinds["dep_delay"] == "integer"  # float64 with NaN, but integral


def test_round_trip_on_real_rows(flights):
    df = flights.sample(5000, random_state=1).reset_index(drop=True)
    t = fit(df)
    x = t.transform(df)
    assert x.shape == (len(df), t.output_dim)
    # layout is contiguous and covers the matrix; each softmax span is a one-hot
    assert [s.start for s in t.layout] == list(np.cumsum([0] + [s.width for s in t.layout])[:-1])
    for s in t.layout:
        if s.activation == "softmax":
            np.testing.assert_array_equal(x[:, s.start : s.stop].sum(1), 1.0)
    back = t.inverse_transform(x, identifiers_real={"tailnum": df.tailnum.dropna().astype(str)})
    for c in df.columns.drop("tailnum"):
        same = (back[c] == df[c]) | (back[c].isna() & df[c].isna())
        assert same.mean() > 0.99, c
        assert back[c].isna().sum() == df[c].isna().sum(), c  # missing values come back where they were
        assert back[c].dtype == df[c].dtype, c


def test_state_dict_is_plain_data_and_rebuilds(flights):
    df = flights.head(3000)
    t = fit(df)
    state = json.loads(json.dumps(t.state_dict()))  # JSON-able: no pickled objects in checkpoints
    t2 = TableTransformer.from_state_dict(state)
    np.testing.assert_array_equal(t.transform(df, seed=3), t2.transform(df, seed=3))


def test_awkward_columns_round_trip():
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame({
        "all_nan": np.full(n, np.nan),
        "const": np.full(n, 7),
        "flag": rng.random(n) < 0.3,
        "grade": rng.integers(1, 4, n),  # a categorical stored as ints
        "colour": pd.Categorical(rng.choice(["red", "green", "blue"], n)),
        "when": pd.date_range("2024-01-01", periods=n, freq="h"),
        "amount": np.where(rng.random(n) < 0.1, np.nan, rng.gamma(2.0, 10.0, n)),
        "count": rng.poisson(3, n),
    })
    t = fit(df, overrides={"grade": "categorical"})
    back = t.inverse_transform(t.transform(df))
    assert back["all_nan"].isna().all()
    assert (back["const"] == 7).all()
    assert back["flag"].dtype == bool and (back["flag"] == df["flag"]).all()
    assert back["grade"].dtype == df["grade"].dtype and (back["grade"] == df["grade"]).all()
    assert isinstance(back["colour"].dtype, pd.CategoricalDtype) and (back["colour"] == df["colour"]).all()
    assert (back["when"] == df["when"].dt.tz_localize("UTC")).mean() > 0.99
    assert back["amount"].isna().sum() == df["amount"].isna().sum()
    assert back["count"].dtype == df["count"].dtype


def test_high_cardinality_is_pooled_not_one_hot():
    rng = np.random.default_rng(0)
    n = 20_000
    words = np.array([f"street {chr(97 + i % 26)}{chr(97 + (i // 26) % 26)}{chr(97 + (i // 676) % 26)}"
                      for i in range(5000)])
    df = pd.DataFrame({"street": words[rng.zipf(1.5, n) % 5000], "x": rng.normal(size=n)})
    t = fit(df, max_categories=50)
    (span,) = [s for s in t.layout if s.column == "street"]
    assert span.width == 50  # 49 frequent levels + one pooled slot, never 5,000 columns
    back = t.inverse_transform(t.transform(df))
    assert set(back["street"]) <= set(df["street"])  # pooled draws are real levels


def test_unknown_column_in_schema_names_it(flights):
    with pytest.raises(DataError, match=r"unknown column 'nope'.*'carrier'"):
        TableSchema.infer(flights.head(100), {"nope": "categorical"})


def test_bad_kind_in_schema_lists_kinds(flights):
    with pytest.raises(ConfigError, match=r"schema.carrier='text'.*'categorical'"):
        TableSchema.infer(flights.head(100), {"carrier": "text"})


def test_sdv_metadata(tmp_path, flights):
    meta = {"METADATA_SPEC_VERSION": "SINGLE_TABLE_V1", "primary_key": None, "columns": {
        "tailnum": {"sdtype": "id"}, "month": {"sdtype": "categorical"},
        "distance": {"sdtype": "numerical", "computer_representation": "Int64"},
        "dep_delay": {"sdtype": "numerical", "computer_representation": "Float"}}}
    p = tmp_path / "metadata.json"
    p.write_text(json.dumps(meta))
    df = flights.head(500)
    overrides = TableSchema.from_sdv_metadata(p, df)
    kinds = {c.name: c.kind for c in TableSchema.infer(df, overrides).columns.values()}
    assert kinds["tailnum"] == "identifier" and kinds["month"] == "categorical"
    assert kinds["distance"] == "integer" and kinds["dep_delay"] == "continuous"
    p.write_text(json.dumps({"columns": {"nope": {"sdtype": "id"}}}))
    with pytest.raises(DataError, match="unknown column 'nope'"):
        TableSchema.from_sdv_metadata(p, df)


def test_unseen_category_policy(flights):
    train = flights[flights.origin != "LGA"].head(1000)
    test = flights[flights.origin == "LGA"].head(10)
    t = fit(train[["origin", "distance"]])
    with pytest.raises(DataError, match="'LGA' was not seen"):
        t.transform(test[["origin", "distance"]])
    x = t.transform(test[["origin", "distance"]], handle_unknown="most_frequent")
    assert t.unknown_counts == {"origin": 10} and x.shape[0] == 10


def test_continuous_values_keep_their_precision():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"fare": rng.gamma(2.0, 5.0, 500).round(2), "ratio": rng.random(500)})
    t = fit(df)
    assert t.numeric["fare"]["decimals"] == 2 and t.numeric["ratio"]["decimals"] is None
    back = t.inverse_transform(t.transform(df))
    np.testing.assert_array_equal(back["fare"], back["fare"].round(2))
    assert (back["fare"] == df["fare"]).mean() > 0.99
