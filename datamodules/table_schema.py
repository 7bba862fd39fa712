"""Table schema: which kind each column is, auto-detected from the data and overridable.

Kinds, and how the tabular VAE treats them:

============  =====================================================================================
continuous    float; mode-specific normalisation (Gaussian mixture per column)
integer       like continuous, rounded back to integers within the observed range
datetime      like continuous on seconds since the epoch, written back as timestamps
categorical   one-hot; strings, ints or pandas ``category``; rare levels pooled above ``max_categories``
boolean       one-hot over {False, True}
identifier    never modelled; replaced by fresh tokens of the same shape (``datamodules.identifiers``)
constant      never modelled; written back as its single value (possibly missing)
============  =====================================================================================

Overrides come from YAML (``{column: kind}``) or from an SDV single-table metadata JSON file.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scarce.errors import DataError, bad_choice, unknown_columns

KINDS = ("continuous", "integer", "datetime", "categorical", "boolean", "identifier", "constant")
NUMERIC_KINDS = ("continuous", "integer", "datetime")
DISCRETE_KINDS = ("categorical", "boolean")

# A code-like token: letters/digits with at least one digit, e.g. a tail number "N14228" or a card id "AB-1234".
_CODE_RE = re.compile(r"^(?=.*\d)[A-Za-z0-9_\-]{2,32}$")
# SDV sdtypes -> our kinds (SDV metadata spec v1, "columns": {name: {"sdtype": ...}}).
_SDV_KINDS = {"numerical": "continuous", "categorical": "categorical", "boolean": "boolean", "datetime": "datetime",
              "id": "identifier"}
_SDV_PII = {"email", "phone_number", "ssn", "name", "first_name", "last_name", "address", "ipv4_address",
            "ipv6_address", "credit_card_number", "iban", "license_plate", "vin"}


@dataclass
class ColumnSpec:
    name: str
    kind: str
    dtype: str = ""  # the pandas dtype it was read with, so outputs keep it
    reason: str = ""  # why auto-detection chose this kind (shown in logs and the manifest)


@dataclass
class TableSchema:
    columns: dict[str, ColumnSpec] = field(default_factory=dict)

    # --- construction -------------------------------------------------------------------------------------------
    @classmethod
    def infer(
        cls,
        df: pd.DataFrame,
        overrides: Mapping[str, Any] | None = None,
        max_categories: int = 200,
        key: str = "datamodule.schema",
    ) -> TableSchema:
        """Detect each column's kind; ``overrides`` ({column: kind}) win over detection."""
        overrides = dict(overrides or {})
        missing = [c for c in overrides if c not in df.columns]
        if missing:
            raise unknown_columns(key, missing, df.columns)
        cols: dict[str, ColumnSpec] = {}
        for name in df.columns:
            s = df[name]
            if name in overrides:
                kind = overrides[name]
                if isinstance(kind, Mapping):  # {kind: integer, ...} form
                    kind = kind.get("kind")
                if kind not in KINDS:
                    raise bad_choice(f"{key}.{name}", kind, KINDS)
                cols[name] = ColumnSpec(name, kind, str(s.dtype), "declared")
            else:
                kind, reason = detect_kind(s, max_categories)
                cols[name] = ColumnSpec(name, kind, str(s.dtype), reason)
        schema = cls(cols)
        schema.validate(df, key)
        return schema

    @classmethod
    def from_sdv_metadata(cls, path: str | Path, df: pd.DataFrame, key: str = "datamodule.schema_path") -> dict:
        """Read an SDV single-table metadata JSON; returns overrides {column: kind} for :meth:`infer`."""
        p = Path(path)
        if not p.is_file():
            raise DataError(f"{key}={str(path)!r}: no such file")
        try:
            meta = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{key}={str(path)!r} is not valid JSON: {e}") from e
        if "tables" in meta:  # multi-table file with one table, as SDV writes it
            tables = meta["tables"]
            if len(tables) != 1:
                raise DataError(f"{key}: metadata has {len(tables)} tables {sorted(tables)}; expected exactly one")
            meta = next(iter(tables.values()))
        if "columns" not in meta:
            raise DataError(f"{key}={str(path)!r}: no 'columns' entry; is this SDV single-table metadata?")
        overrides = {}
        for name, col in meta["columns"].items():
            sdtype = col.get("sdtype")
            if sdtype == "numerical":
                rep = str(col.get("computer_representation", "Float"))
                overrides[name] = "integer" if rep.lower().startswith(("int", "uint")) else "continuous"
            elif sdtype in _SDV_KINDS:
                overrides[name] = _SDV_KINDS[sdtype]
            elif sdtype in _SDV_PII or col.get("pii"):
                overrides[name] = "identifier"
            else:
                raise bad_choice(f"{key}: column {name!r} sdtype", sdtype, list(_SDV_KINDS) + sorted(_SDV_PII))
        primary = meta.get("primary_key")
        if primary:
            overrides[primary] = "identifier"
        missing = [c for c in overrides if c not in df.columns]
        if missing:
            raise unknown_columns(key, missing, df.columns)
        return overrides

    # --- checks and views ----------------------------------------------------------------------------------------
    def validate(self, df: pd.DataFrame, key: str = "datamodule.schema") -> None:
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise unknown_columns(key, missing, df.columns)
        for spec in self.columns.values():
            s = df[spec.name]
            if spec.kind in ("continuous", "integer") and not pd.api.types.is_numeric_dtype(s):
                coerced = pd.to_numeric(s, errors="coerce")
                bad = s[coerced.isna() & s.notna()]
                if len(bad):
                    raise DataError(
                        f"{key}.{spec.name}: declared {spec.kind} but holds non-numeric values such as "
                        f"{bad.iloc[0]!r}; declare it categorical or clean the column"
                    )

    def kinds(self) -> dict[str, str]:
        """{column: kind}, in table order."""
        return {c.name: c.kind for c in self.columns.values()}

    def names(self, *kinds: str) -> list[str]:
        return [c.name for c in self.columns.values() if not kinds or c.kind in kinds]

    def to_dict(self) -> dict:
        return {"columns": [asdict(c) for c in self.columns.values()]}

    @classmethod
    def from_dict(cls, d: Mapping) -> TableSchema:
        return cls({c["name"]: ColumnSpec(**c) for c in d["columns"]})


def detect_kind(s: pd.Series, max_categories: int = 200) -> tuple[str, str]:
    """Auto-detected kind of one column and the reason, as a short phrase."""
    non_null = s.dropna()
    n, n_unique = len(non_null), int(non_null.nunique())
    if n_unique <= 1:
        return "constant", "all missing" if n == 0 else "one value"
    if isinstance(s.dtype, pd.CategoricalDtype):
        return "categorical", "category dtype"
    if pd.api.types.is_bool_dtype(s):
        return "boolean", "bool dtype"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime", "datetime dtype"
    if pd.api.types.is_numeric_dtype(s):
        values = non_null.to_numpy(dtype=np.float64)
        integral = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
        if integral and n_unique == n and n >= 50 and pd.api.types.is_integer_dtype(s):
            return "identifier", "integer unique per row"
        return ("integer", "integral values") if integral else ("continuous", "float values")
    # strings / objects
    as_str = non_null.astype(str)
    if _looks_like_datetime(as_str):  # before uniqueness: timestamps are often unique per row
        return "datetime", "ISO-8601 strings"
    if n >= 50 and n_unique == n:
        return "identifier", "unique per row"
    if n_unique > max_categories:
        sample = as_str.sample(min(len(as_str), 1000), random_state=0)
        if sample.str.match(_CODE_RE).mean() >= 0.9:
            return "identifier", f"{n_unique} code-like values"
        return "categorical", f"{n_unique} levels (rare ones pooled)"
    return "categorical", "strings"


def _looks_like_datetime(s: pd.Series) -> bool:
    sample = s.head(200)
    if not sample.str.match(r"^\d{4}-\d{2}-\d{2}").all():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", format="ISO8601", utc=True)
    return bool(parsed.notna().all())


def to_datetime(s: pd.Series) -> pd.Series:
    """Parse a datetime column (ISO strings or datetime dtype) to UTC timestamps."""
    if pd.api.types.is_datetime64_any_dtype(s):
        return s if getattr(s.dt, "tz", None) is not None else s.dt.tz_localize("UTC")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pd.to_datetime(s, errors="coerce", format="ISO8601", utc=True)
