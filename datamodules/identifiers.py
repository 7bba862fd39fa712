"""Identifier columns: learn their *shape*, never their values.

Synthetic tables get fresh tokens of the same shape (a tail number ``N14228`` becomes e.g. ``N58301``), rejected
until none equals a real value. ``release`` pseudonymises a real table with a keyed hash (HMAC-SHA256) so the
same real value always maps to the same pseudonym under one key, and nobody without the key can map it back.
"""

from __future__ import annotations

import hashlib
import hmac
import string
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scarce.errors import DataError

_CLASSES = {"A": string.ascii_uppercase, "a": string.ascii_lowercase, "9": string.digits}
MAX_TEMPLATES = 64


def _template(token: str) -> str:
    """Character-class template: upper -> 'A', lower -> 'a', digit -> '9', anything else kept literally."""
    return "".join("A" if c.isupper() and c.isascii() else "a" if c.islower() and c.isascii()
                   else "9" if c.isdigit() and c.isascii() else c for c in token)


@dataclass
class IdentifierShape:
    """Shape of an identifier column: templates with frequencies and the characters seen at each position."""

    templates: list[str]  # e.g. ["A99999", "A999AA"]
    weights: list[float]  # template frequencies, sum to 1
    alphabets: list[list[str]]  # per template, per position: the characters seen there (literal positions: 1 char)
    null_rate: float  # fraction of missing values, reproduced in the output
    unique: bool  # the real column is unique per row: the output is too
    integer: bool  # the real column holds integers: tokens are written back as integers

    @classmethod
    def fit(cls, s: pd.Series) -> IdentifierShape:
        non_null = s.dropna()
        integer = pd.api.types.is_integer_dtype(s) or (
            pd.api.types.is_float_dtype(s) and bool(np.all(non_null == np.round(non_null)))
        )
        tokens = non_null.astype("int64").astype(str) if integer and len(non_null) else non_null.astype(str)
        if len(tokens) == 0:
            raise DataError(f"identifier column {s.name!r} has no values; declare it constant instead")
        freq = tokens.value_counts()  # templates are computed once per distinct value
        uniq = freq.index.astype(str).tolist()
        tpls = [_template(t) for t in uniq]
        counts: Counter[str] = Counter()
        for tpl, c in zip(tpls, freq.to_numpy()):
            counts[tpl] += int(c)
        top = counts.most_common(MAX_TEMPLATES)
        total = sum(c for _, c in top)
        members: dict[str, list[str]] = {}
        for tok, tpl in zip(uniq, tpls):
            members.setdefault(tpl, []).append(tok)
        alphabets = [["".join(sorted({t[i] for t in members[tpl]})) for i in range(len(tpl))] for tpl, _ in top]
        return cls(
            templates=[t for t, _ in top],
            weights=[c / total for _, c in top],
            alphabets=alphabets,
            null_rate=float(s.isna().mean()),
            unique=bool(non_null.nunique() == len(non_null)),
            integer=bool(integer),
        )

    def _alphabet(self, t: int, i: int) -> str:
        """Characters to draw from at position i of template t: the whole class unless the position is literal."""
        seen = self.alphabets[t][i]
        cls = self.templates[t][i]
        if cls in _CLASSES and len(seen) > 1:
            return _CLASSES[cls] if cls != "9" or i > 0 or "0" in seen else string.digits[1:]
        return seen

    def sample(self, n: int, real: Iterable[str] | None, rng: np.random.Generator, max_rounds: int = 50) -> pd.Series:
        """``n`` fresh tokens of this shape; none equals a value in ``real`` (string form); missing at the real rate."""
        real_set = {str(v) for v in real} if real is not None else set()
        out: list[str | None] = []
        seen: set[str] = set()
        null = rng.random(n) < self.null_rate
        need = int((~null).sum())
        for _ in range(max_rounds):
            if len(out) >= need:
                break
            k = (need - len(out)) * 2 + 16
            counts = np.bincount(rng.choice(len(self.templates), size=k, p=np.asarray(self.weights)),
                                 minlength=len(self.templates))
            for t, m in enumerate(counts):
                if m == 0:
                    continue
                cols = [np.asarray(list(self._alphabet(t, i)))[rng.integers(len(self._alphabet(t, i)), size=m)]
                        for i in range(len(self.templates[t]))]
                for tok in ("".join(chars) for chars in zip(*cols)):
                    if tok in real_set or (self.unique and tok in seen):
                        continue
                    seen.add(tok)
                    out.append(tok)
                    if len(out) == need:
                        break
                if len(out) == need:
                    break
        rng.shuffle(out)
        if len(out) < need:
            raise DataError(
                f"could not draw {need} fresh identifiers of shapes {self.templates[:3]} that avoid the real values; "
                "the shape space is nearly exhausted"
            )
        values = np.empty(n, dtype=object)
        values[null] = None
        values[~null] = out
        series = pd.Series(values)
        if self.integer:
            return pd.to_numeric(series).astype("Int64")
        return series.astype("string")


def pseudonymise(s: pd.Series, key: bytes) -> pd.Series:
    """Keyed, shape-preserving pseudonyms: HMAC-SHA256(key, value) decides each non-literal character.

    Deterministic under one key (joins across tables still work), unlinkable without it. Missing stays missing.
    """
    if not key:
        raise DataError("release key is empty")
    shape = IdentifierShape.fit(s)
    cache: dict[str, str] = {}

    def one(value) -> str | None:
        if pd.isna(value):
            return None
        text = str(int(value)) if shape.integer else str(value)
        if text not in cache:
            digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
            tpl = _template(text)
            chars = []
            for i, c in enumerate(tpl):
                alphabet = _CLASSES.get(c)
                byte = digest[i % len(digest)] ^ digest[(i * 7 + 3) % len(digest)]
                chars.append(alphabet[byte % len(alphabet)] if alphabet else c)
            # keep a constant prefix (e.g. the "N" of US tail numbers): positions whose real character never varies
            for t, tmpl in enumerate(shape.templates):
                if tmpl == tpl:
                    chars = [shape.alphabets[t][i] if len(shape.alphabets[t][i]) == 1 else ch
                             for i, ch in enumerate(chars)]
                    break
            cache[text] = "".join(chars)
        return cache[text]

    out = pd.Series([one(v) for v in s], index=s.index, dtype=object)
    return pd.to_numeric(out).astype("Int64") if shape.integer else out.astype("string")


def to_state(shape: IdentifierShape) -> dict:
    return dict(shape.__dict__)


def from_state(state: dict) -> IdentifierShape:
    return IdentifierShape(**state)
