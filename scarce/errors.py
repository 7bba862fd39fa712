"""User-facing errors: each names the key, the bad value and what is allowed.

Entry points catch :class:`ScarceError` and print its message on one line (no traceback); anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ScarceError(Exception):
    """A problem with the user's input (config, file, column, value) that the user can fix."""


class ConfigError(ScarceError, ValueError):
    """A config value is outside what is allowed."""


class DataError(ScarceError, ValueError):
    """A data file or table cannot be used as given."""


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _allowed(allowed: Iterable[Any], limit: int = 12) -> str:
    items = [_fmt(a) for a in allowed]
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return "{" + ", ".join(items[:limit]) + more + "}"


def bad_choice(key: str, value: Any, allowed: Iterable[Any]) -> ConfigError:
    """Error for a value that must be one of a fixed set."""
    return ConfigError(f"{key}={_fmt(value)} is not allowed; expected one of {_allowed(sorted(map(str, allowed)))}")


def check_choice(key: str, value: Any, allowed: Iterable[Any]) -> Any:
    allowed = list(allowed)
    if value not in allowed:
        raise bad_choice(key, value, allowed)
    return value


def check_range(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
    allow_none: bool = False,
) -> Any:
    """Check a number lies in an interval; returns it unchanged."""
    if value is None and allow_none:
        return value
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{key}={_fmt(value)} is not allowed; expected {kind}" + (" or null" if allow_none else ""))
    lo_ok = low is None or (value >= low if low_inclusive else value > low)
    hi_ok = high is None or (value <= high if high_inclusive else value < high)
    if not (lo_ok and hi_ok):
        lb = "-inf" if low is None else f"{low}"
        hb = "inf" if high is None else f"{high}"
        interval = ("[" if low_inclusive and low is not None else "(") + f"{lb}, {hb}" + (
            "]" if high_inclusive and high is not None else ")"
        )
        raise ConfigError(f"{key}={_fmt(value)} is not allowed; expected {kind} in {interval}")
    return value


def unknown_columns(key: str, names: Iterable[str], available: Iterable[str]) -> DataError:
    """Error for column names that are not in the table."""
    names = list(names)
    return DataError(
        f"{key}: unknown column{'s' if len(names) > 1 else ''} {', '.join(map(_fmt, names))}; "
        f"the table has {_allowed(list(available), limit=30)}"
    )
