"""Metric names, defined once. Modules log ``name(stage, what)``; configs refer to the same strings."""

from __future__ import annotations

STAGES = ("train", "val", "test")


def name(stage: str, what: str) -> str:
    """e.g. name("val", "loss") -> "val/loss"."""
    return f"{stage}/{what}"


VAL_LOSS = name("val", "loss")  # what ModelCheckpoint monitors and sweeps minimise by default (configs/train.yaml)
