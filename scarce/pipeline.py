"""The steps after training that train.py, generate.py and evaluate.py share."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from scarce.generation import write_dataset
from scarce.io import write_json, write_text
from scarce.loggers import log_image, log_table, run_location

log = logging.getLogger("scarce")
SAMPLE_TABLE_ROWS = 100
REPORT_JSON, REPORT_MD = "report.json", "report.md"


def log_config(cfg: DictConfig, loggers: Sequence[Logger]) -> None:
    """The whole resolved config as hyperparameters (what W&B shows as the run's config)."""
    if not loggers:
        return
    params = OmegaConf.to_container(cfg, resolve=True)
    params.pop("hydra", None)
    for lg in loggers:
        lg.log_hyperparams(params)


def best_checkpoint(trainer) -> str | None:
    cb = getattr(trainer, "checkpoint_callback", None)
    if cb is None or trainer.fast_dev_run:
        return None
    return cb.best_model_path or cb.last_model_path or None


def generate_after_training(cfg: DictConfig, model, datamodule, ckpt: str | None,
                            loggers: Sequence[Logger]) -> dict[str, Any]:
    """Sample from the best checkpoint (or the in-memory model), write it with a manifest, log a preview."""
    from models.base import load_generator

    gen_cfg = cfg.generate
    generator = load_generator(ckpt) if ckpt else model.cpu().eval()
    n = int(gen_cfg.get("n") or datamodule.train_size())
    log.info("generating %d %s from %s", n, datamodule.unit, ckpt or "the in-memory model")
    seed = int(gen_cfg.get("seed") or 0)
    data = generator.generate(n, seed=seed, progress=True, **datamodule.generation_kwargs(n, seed))
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    path, manifest = write_dataset(data, gen_cfg.output, config=config, checkpoint=ckpt, seed=gen_cfg.get("seed"))
    preview(data, loggers, Path(cfg.paths.output_dir))
    return {"synthetic": str(path), "manifest": str(manifest)}


def preview(data: Any, loggers: Sequence[Logger], out_dir: Path) -> None:
    """What people look at first: 100 rows of a table, or one grid row per class of an image set."""
    if isinstance(data, pd.DataFrame):
        log_table(loggers, "synthetic/sample", data.head(SAMPLE_TABLE_ROWS))
        return
    if hasattr(data, "waves"):  # speech: a few clips to listen to and their spectrograms
        from speech.media import preview_audio

        log.info("synthetic audio preview: %s", preview_audio(data, loggers, out_dir))
        return
    import torch

    from models.visuals import image_grid

    per_class, first = 10, []
    labels = data.labels.argmax(1) if data.multi_label else data.labels
    for c in range(min(len(data.classes), 10)):
        first.extend(np.flatnonzero(labels == c)[:per_class].tolist())
    x = torch.from_numpy(data.images[first]).permute(0, 3, 1, 2).float() / 127.5 - 1
    path = log_image(loggers, "synthetic/grid", image_grid(x, per_class), out_dir)
    log.info("sample grid (one row per class): %s", path)


def evaluate_synthetic(evaluator, datamodule, synthetic: str | Path | Any, out_dir: str | Path,
                       loggers: Sequence[Logger]) -> dict[str, Any]:
    """Train-on-synthetic / test-on-real plus fidelity, privacy and quality: report.json + report.md, logged."""
    report = evaluator.evaluate(datamodule, synthetic, out_dir)
    markdown = evaluator.to_markdown(report)
    out = Path(out_dir)
    json_path, md_path = write_json(out / REPORT_JSON, report), write_text(out / REPORT_MD, markdown)
    for lg in loggers:
        lg.log_metrics(evaluator.flat_metrics(report))
    log_table(loggers, "eval/utility", evaluator.utility_table(report))
    print("\n" + markdown, flush=True)
    return {"report": str(json_path), "report_md": str(md_path)}


def wandb_location(loggers: Sequence[Logger]) -> str | None:
    try:
        return run_location(loggers)
    except Exception as e:  # noqa: BLE001 - a summary line must never fail the run
        log.warning("could not read the W&B run location: %s", e)
        return None


def print_summary(summary: dict[str, Any]) -> None:
    labels = {"run_dir": "run folder", "checkpoint": "checkpoint", "synthetic": "synthetic data",
              "manifest": "manifest", "report": "report (json)", "report_md": "report (markdown)", "wandb": "W&B run"}
    width = max(len(v) for v in labels.values())
    lines = [f"  {labels[k]:<{width}}  {v}" for k, v in summary.items() if k in labels and v]
    print("\nOutputs:\n" + "\n".join(lines), flush=True)
