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
    char_weights: list[list[list[float]]]  # their frequencies, so a mostly-"N" first letter stays mostly "N"
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
        count_of = dict(zip(uniq, freq.to_numpy().tolist()))
        members: dict[str, list[str]] = {}
        for tok, tpl in zip(uniq, tpls):
            members.setdefault(tpl, []).append(tok)
        alphabets, char_weights = [], []
        for tpl, _ in top:
            toks = members[tpl]
            w = [count_of[t] for t in toks]
            per_pos, per_w = [], []
            for i in range(len(tpl)):
                c: Counter[str] = Counter()
                for tok, wt in zip(toks, w):
                    c[tok[i]] += wt
                chars = sorted(c)
                total_i = sum(c.values())
                per_pos.append("".join(chars))
                per_w.append([c[ch] / total_i for ch in chars])
            alphabets.append(per_pos)
            char_weights.append(per_w)
        return cls(
            templates=[t for t, _ in top],
            weights=[c / total for _, c in top],
            alphabets=alphabets,
            char_weights=char_weights,
            null_rate=float(s.isna().mean()),
            unique=bool(non_null.nunique() == len(non_null)),
            integer=bool(integer),
        )

    def _position_choices(self, t: int, i: int, widen: float) -> tuple[np.ndarray, np.ndarray]:
        """Characters and probabilities at position i of template t.

        The real per-position frequencies, mixed with weight ``min(widen, 1)`` with the whole character class when
        the position varies in the real data. A position that never varies (the "N" of US tail numbers, the zeros
        of "T000123") stays fixed unless ``widen > 1``, the last resort for a small shape space."""
        seen, w = self.alphabets[t][i], np.asarray(self.char_weights[t][i])
        cls = _CLASSES.get(self.templates[t][i])
        if widen == 0 or cls is None or (len(seen) == 1 and (widen <= 1 or i == 0)):
            return np.asarray(list(seen)), w
        widen = min(widen, 1.0)
        chars = sorted(set(cls) | set(seen))
        emp = dict(zip(seen, w))
        p = np.array([(1 - widen) * emp.get(c, 0.0) + widen / len(chars) for c in chars])
        return np.asarray(chars), p / p.sum()

    def sample(self, n: int, real: Iterable[str] | None, rng: np.random.Generator, max_rounds: int = 50) -> pd.Series:
        """``n`` fresh tokens of this shape; none equals a value in ``real`` (string form); missing at the real rate.

        Characters follow the real per-position frequencies; when most draws collide with real values (a small
        shape space, e.g. sequential ids), the draw widens towards the whole character class.
        """
        real_set = {str(v) for v in real} if real is not None else set()
        out: list[str] = []
        seen: set[str] = set()
        null = rng.random(n) < self.null_rate
        need = int((~null).sum())
        widen = 0.0
        for _ in range(max_rounds):
            if len(out) >= need:
                break
            k = (need - len(out)) * 2 + 16
            before = len(out)
            counts = np.bincount(rng.choice(len(self.templates), size=k, p=np.asarray(self.weights)),
                                 minlength=len(self.templates))
            for t, m in enumerate(counts):
                if m == 0:
                    continue
                cols = []
                for i in range(len(self.templates[t])):
                    chars, p = self._position_choices(t, i, widen)
                    cols.append(chars[rng.choice(len(chars), size=m, p=p)])
                for tok in ("".join(chars) for chars in zip(*cols)):
                    if tok in real_set or (self.unique and tok in seen):
                        continue
                    seen.add(tok)
                    out.append(tok)
                    if len(out) == need:
                        break
                if len(out) == need:
                    break
            if len(out) - before < k / 4:  # most draws collided: widen the alphabet, fixed positions last
                widen = min(1.5, widen + 0.25)
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
    templates = {tpl: i for i, tpl in enumerate(shape.templates)}
    cache: dict[str, str] = {}
    taken: set[str] = set()

    def draw(text: str, attempt: int) -> str:
        digest = hmac.new(key, f"{attempt}:{text}".encode(), hashlib.sha256).digest()
        tpl = _template(text)
        t = templates.get(tpl)
        chars = []
        for i, c in enumerate(tpl):
            u = int.from_bytes(hashlib.sha256(digest + bytes([i])).digest()[:8], "big") / 2**64  # uniform [0, 1)
            if t is not None:  # the characters seen at this position, widened to the whole class where it varies
                choices, p = shape._position_choices(t, i, widen=1.0)
                chars.append(str(choices[min(int(np.searchsorted(np.cumsum(p), u, side="right")), len(p) - 1)]))
            else:  # a rare template: any character of the same class
                alphabet = _CLASSES.get(c)
                chars.append(alphabet[int(u * len(alphabet))] if alphabet else c)
        return "".join(chars)

    # Distinct real values get distinct pseudonyms: a collision is redrawn (in sorted order, so deterministic).
    texts = sorted({str(int(v)) if shape.integer else str(v) for v in s.dropna()})
    for text in texts:
        for attempt in range(1000):
            fake = draw(text, attempt)
            if fake not in taken:
                break
        taken.add(fake)
        cache[text] = fake

    def one(value) -> str | None:
        if pd.isna(value):
            return None
        return cache[str(int(value)) if shape.integer else str(value)]

    out = pd.Series([one(v) for v in s], index=s.index, dtype=object)
    return pd.to_numeric(out).astype("Int64") if shape.integer else out.astype("string")


def to_state(shape: IdentifierShape) -> dict:
    return dict(shape.__dict__)


def from_state(state: dict) -> IdentifierShape:
    return IdentifierShape(**state)
