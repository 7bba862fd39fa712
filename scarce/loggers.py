"""Experiment loggers: W&B online when the user has credentials, offline otherwise (no prompt, no hang)."""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

log = logging.getLogger(__name__)
WANDB_MODES = ("auto", "online", "offline", "disabled")
WANDB_HOST = "api.wandb.ai"


def wandb_credentials() -> bool:
    """True when W&B could log in without a prompt: WANDB_API_KEY, or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        return netrc.netrc(path).authenticators(os.environ.get("WANDB_BASE_URL_HOST", WANDB_HOST)) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """'auto' -> $WANDB_MODE if set, else 'online' with credentials, else 'offline'."""
    from scarce.errors import check_choice

    check_choice("logger.wandb.mode", mode, WANDB_MODES)
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled", "dryrun", "run"):
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    return "online" if wandb_credentials() else "offline"


def wandb_logger(save_dir: str, project: str = "scarce", name: str | None = None, mode: str = "auto",
                 **kwargs: Any) -> WandbLogger:
    """A Lightning WandbLogger whose run files live under ``save_dir`` (the run folder)."""
    resolved = resolve_wandb_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")  # keep the terminal ours; metrics still go to W&B
    log.info("W&B logging %s (mode=%s)", "online" if resolved == "online" else "to local files", resolved)
    return WandbLogger(save_dir=save_dir, project=project, name=name, offline=resolved == "offline",
                       mode=resolved, **kwargs)


def log_table(loggers: Sequence[Logger], key: str, df: pd.DataFrame) -> None:
    """A table to every logger: a ``wandb.Table`` for W&B, a CSV file beside the metrics for CSVLogger."""
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.log_table(key=key, dataframe=df.astype(object).where(df.notna(), None).astype(str))
        elif isinstance(lg, CSVLogger):
            path = Path(lg.log_dir) / f"{key.replace('/', '_')}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            df.to_csv(path, index=False)


def log_image(loggers: Sequence[Logger], key: str, image: np.ndarray, out_dir: str | Path, step: int | None = None,
              caption: str | None = None) -> Path:
    """An (H, W, C) uint8 image to every logger, and always as a PNG under ``out_dir`` (so it exists without W&B)."""
    from PIL import Image

    from scarce.io import atomic_path

    name = key.replace("/", "_") + (f"_step{step:06d}" if step is not None else "") + ".png"
    path = Path(out_dir) / name
    with atomic_path(path) as tmp:
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp, format="PNG")
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            extra = {"caption": [caption]} if caption else {}  # WandbLogger checks every list kwarg's length
            lg.log_image(key=key, images=[image], step=step, **extra)
    return path


def run_location(loggers: Sequence[Logger]) -> str | None:
    """Where the W&B run lives (URL online, folder offline), for the closing summary."""
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            run = lg.experiment
            url = getattr(run, "url", None)
            return url or getattr(run, "dir", None)
    return None


def close_loggers(loggers: Sequence[Logger]) -> None:
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            import wandb

            if wandb.run is not None:
                wandb.finish()
