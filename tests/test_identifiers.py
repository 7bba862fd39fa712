"""Identifier columns: fresh tokens keep the shape and never equal a real value; release pseudonyms are keyed."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from datamodules.identifiers import IdentifierShape, _template, pseudonymise


def test_fresh_tokens_keep_shape_and_avoid_real_values(flights):
    real = flights["tailnum"]
    shape = IdentifierShape.fit(real)
    real_values = real.dropna().astype(str).unique()
    out = shape.sample(20_000, real_values, np.random.default_rng(0))
    tokens = out.dropna().astype(str)
    assert not tokens.isin(set(real_values)).any()
    real_templates = set(map(_template, real_values))
    assert tokens.map(_template).isin(real_templates).all()
    assert tokens.str.startswith("N").mean() > 0.95  # US registrations keep their literal "N"
    assert abs(out.isna().mean() - real.isna().mean()) < 0.01  # missing at the real rate


def test_unique_integer_ids_stay_unique_integers():
    ids = pd.Series(np.arange(100_000, 100_500))
    shape = IdentifierShape.fit(ids)
    out = shape.sample(400, ids.astype(str), np.random.default_rng(1))
    assert str(out.dtype) == "Int64" and out.is_unique
    assert not out.isin(ids).any()
    assert out.astype(str).str.fullmatch(r"[1-9]\d{5}").all()


def test_release_pseudonyms_are_keyed_deterministic_and_shape_preserving(flights):
    s = flights["tailnum"].head(5000)
    a = pseudonymise(s, b"key-one")
    again = pseudonymise(s, b"key-one")
    other = pseudonymise(s, b"key-two")
    pd.testing.assert_series_equal(a, again)
    assert (a.dropna() != other.dropna()).mean() > 0.95
    assert a.isna().equals(s.isna())
    both = s.notna()
    assert (a[both].map(_template) == s[both].map(_template)).all()
    # the same real value always maps to the same pseudonym, different ones (almost always) to different ones
    pairs = pd.DataFrame({"real": s[both], "fake": a[both]}).drop_duplicates()
    assert pairs["real"].is_unique
    assert pairs["fake"].nunique() >= 0.99 * len(pairs)
    assert not re.search("key-one", "".join(a.dropna()))
