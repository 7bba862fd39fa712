"""Train a generator from config, then (by default) write a synthetic dataset and evaluate it on real data.

    python train.py experiment=flights_tvae
    python train.py experiment=flights_tvae trainer.max_epochs=300 datamodule.max_rows=null
    python train.py -m hparams_search=flights_tvae_optuna
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from scarce import pipeline
from scarce.errors import ConfigError
from scarce.loggers import close_loggers
from scarce.runtime import build, build_list, check_trainer, run_cli, seed_everything, set_torch_threads

log = logging.getLogger("scarce.train")


def train(cfg: DictConfig) -> tuple[float | None, dict]:
    """Fit, test, generate, evaluate. Returns (the metric a sweeper optimises, a summary of what was written)."""
    seed_everything(cfg.get("seed"))
    set_torch_threads(cfg.get("torch_threads"))
    check_trainer(cfg.trainer)  # fail before minutes of data preparation, not after
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    wants_eval = bool(cfg.get("evaluate") and cfg.get("generate") and cfg.generate.get("enabled", True))
    evaluator = build(cfg.evaluation, "evaluation") if wants_eval else None  # bad values fail before training
    log.info("instantiating datamodule <%s>", cfg.datamodule._target_)
    datamodule = build(cfg.datamodule, "datamodule")
    log.info("instantiating model <%s>", cfg.model._target_)
    model = build(cfg.model, "model", **datamodule.model_kwargs())
    if evaluator is not None:  # the downstream task fits this data: checked now, not after training
        evaluator.check(datamodule)
    callbacks = build_list(cfg.get("callbacks"), "callbacks")
    loggers = build_list(cfg.get("logger"), "logger")
    log.info("instantiating trainer <%s>", cfg.trainer._target_)
    trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    summary: dict = {"run_dir": str(out_dir)}
    try:
        pipeline.log_config(cfg, loggers)
        if cfg.get("train", True):
            # a checkpoint to resume from is user input: load it as plain data and tensors only
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        metric_name = cfg.get("optimized_metric")
        metric = trainer.callback_metrics.get(metric_name) if metric_name else None
        if metric_name and metric is None and cfg.get("train", True) and not trainer.fast_dev_run:
            every = trainer.check_val_every_n_epoch or 1
            hint = (f" (validation runs every trainer.check_val_every_n_epoch={every} epochs and "
                    f"trainer.max_epochs={trainer.max_epochs} is fewer: set trainer.check_val_every_n_epoch=1)"
                    if metric_name.startswith("val/") and trainer.max_epochs is not None and 0 < trainer.max_epochs < every
                    else "")
            raise ConfigError(f"optimized_metric={metric_name!r} was not logged; logged metrics: "
                              f"{sorted(trainer.callback_metrics)}{hint}")
        best = pipeline.best_checkpoint(trainer)
        summary["checkpoint"] = best
        if cfg.get("test"):
            trainer.test(model=model, datamodule=datamodule, ckpt_path=best if best else None, weights_only=True)
        if not trainer.is_global_zero:  # under DDP, one process writes the synthetic data and the report
            return (float(metric) if metric is not None else None), summary
        if cfg.get("generate") and cfg.generate.get("enabled", True):
            summary.update(pipeline.generate_after_training(cfg, model, datamodule, best, loggers))
            if evaluator is not None:
                summary.update(pipeline.evaluate_synthetic(evaluator, datamodule, summary["synthetic"], out_dir, loggers))
        summary["wandb"] = pipeline.wandb_location(loggers)
        pipeline.print_summary(summary)
        return (float(metric) if metric is not None else None), summary
    finally:
        close_loggers(loggers)


@hydra.main(version_base="1.3", config_path="configs", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    metric, _ = run_cli(train, cfg)
    return metric


if __name__ == "__main__":
    main()
