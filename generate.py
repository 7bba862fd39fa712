"""Write a synthetic dataset (a table or an image set) from a checkpoint, or a pseudonymised release of a table.

    python generate.py ckpt_path=logs/.../checkpoints/last.ckpt n=10000 output=synthetic.parquet
    python generate.py ckpt_path=... n=500 'condition={origin: JFK}'
    python generate.py ckpt_path=logs/fashion_diffusion/.../last.ckpt n=1000 output=sneakers.npz labels=[Sneaker]
    python generate.py ckpt_path=... n=200 output=samples_png guidance_scale=3 steps=100   # PNG class folders
    python generate.py ckpt_path=logs/hedgewars_cvae/.../last.ckpt n=100 labels=[Hello] output=hello_wavs
    SCARCE_RELEASE_KEY=... python generate.py mode=release release.input=flights.csv release.output=masked.csv
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from scarce.errors import ConfigError, DataError, check_choice, check_range
from scarce.generation import image_output_kind, write_dataset
from scarce.io import read_table, table_format
from scarce.runtime import run_cli

log = logging.getLogger("scarce.generate")
MODES = ("sample", "release")


def real_identifier_values(model, allow_unchecked: bool) -> dict | None:
    """Real values of the identifier columns, read from the source table the checkpoint names."""
    source = getattr(model, "source", {}) or {}
    columns = source.get("identifiers") or []
    if not columns:
        return {}
    path = source.get("path")
    if not path or not Path(path).is_file():
        if allow_unchecked:
            log.warning("source table %s not found: fresh identifiers are not checked against real values", path)
            return None
        raise DataError(
            f"the checkpoint's source table {path!r} is not readable, so fresh identifier tokens for {columns} "
            "cannot be checked against the real values; restore the file or pass allow_unchecked_identifiers=true"
        )
    df = read_table(path, key="source table")
    return {c: df[c].dropna().astype(str).unique() for c in columns if c in df}


def sample(cfg: DictConfig) -> dict:
    from models.base import load_generator

    if not cfg.get("ckpt_path"):
        raise ConfigError("ckpt_path is required in mode=sample: python generate.py ckpt_path=path/to/model.ckpt")
    n = check_range("n", cfg.n, 1, integer=True)
    model = load_generator(cfg.ckpt_path)
    is_image, is_speech = model.domain == "image", model.domain == "speech"
    default = "synthetic.npz" if is_image else "synthetic_audio" if is_speech else "synthetic.csv"
    output = cfg.get("output") or str(Path(cfg.paths.output_dir) / default)
    # a bad output name fails before any sampling
    if is_speech:
        if Path(output).suffix:
            raise ConfigError(f"output={output!r}: audio sets are written to a folder (WAV files + labels.csv); "
                              "give a path without an extension")
    else:
        image_output_kind(output) if is_image else table_format(output, key="output")
    if is_speech:  # labels: as for images, class names or indices cycled over the n clips
        kwargs, extra = image_kwargs(cfg, model, n)
        kwargs = {k: v for k, v in kwargs.items() if k == "labels"}
    else:
        kwargs, extra = image_kwargs(cfg, model, n) if is_image else table_kwargs(cfg, model)
    data = model.generate(n, seed=int(cfg.seed), progress=True, **kwargs)
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    path, manifest = write_dataset(data, output, config=config, checkpoint=cfg.ckpt_path, seed=int(cfg.seed),
                                   extra=extra)
    unit = "images" if is_image else "clips" if is_speech else "rows"
    print(f"wrote {len(data):,} {unit} to {path}\nmanifest: {manifest}", flush=True)
    return {"output": str(path), "manifest": str(manifest)}


def table_kwargs(cfg: DictConfig, model) -> tuple[dict, dict]:
    condition = OmegaConf.to_container(cfg.condition, resolve=True) if cfg.get("condition") else {}
    if not isinstance(condition, dict):
        raise ConfigError(f"condition={condition!r} is not allowed; expected a mapping like '{{origin: JFK}}'")
    real = real_identifier_values(model, bool(cfg.get("allow_unchecked_identifiers", False)))
    return {"condition": condition, "real_identifiers": real}, {"condition": condition}


def image_kwargs(cfg: DictConfig, model, n: int) -> tuple[dict, dict]:
    """labels: null = balanced over classes; a list of class names or indices is cycled over the n images."""
    import torch

    classes = list(model.hparams.get("classes") or [])
    kwargs: dict = {}
    wanted = cfg.get("labels")
    if wanted is not None:
        if model.hparams.get("multi_label"):
            raise ConfigError("labels=... picks classes of a single-label model; this model is multi-label")
        wanted = [wanted] if isinstance(wanted, (str, int)) else list(wanted)
        index = []
        for w in wanted:
            if str(w) in classes:
                index.append(classes.index(str(w)))
            elif isinstance(w, int) and 0 <= w < len(classes):
                index.append(w)
            else:
                raise ConfigError(f"labels: {w!r} is not a class of this model; allowed: {classes}")
        kwargs["labels"] = torch.tensor(index)[torch.arange(n) % len(index)]
    for key in ("guidance_scale", "steps", "sampler"):  # diffusion sampling options; a GAN ignores them
        if cfg.get(key) is not None:
            kwargs[key] = cfg[key]
    return kwargs, {"labels": None if wanted is None else [str(w) for w in wanted]}


def release(cfg: DictConfig) -> dict:
    """Pseudonymise identifier columns of a real table with a keyed hash; everything else is copied as is."""
    from datamodules.identifiers import pseudonymise
    from datamodules.table_schema import TableSchema

    rcfg = cfg.release
    env = rcfg.key_env
    key = os.environ.get(env, "")
    if not key:
        raise ConfigError(f"release.key_env={env!r}: the environment variable is unset or empty; set it to a secret "
                          "key (it is read from the environment only, so it never lands in a config or output)")
    df = read_table(rcfg.input, key="release.input")
    if rcfg.get("columns"):
        columns = list(rcfg.columns)
        missing = [c for c in columns if c not in df]
        if missing:
            from scarce.errors import unknown_columns

            raise unknown_columns("release.columns", missing, df.columns)
    else:
        columns = TableSchema.infer(df).names("identifier")
    if not columns:
        raise DataError(f"release.input={rcfg.input!r}: no identifier columns detected; name them in release.columns")
    out = df.copy()
    for c in columns:
        out[c] = pseudonymise(df[c], key.encode())
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    path, manifest = write_dataset(out, rcfg.output, config=config, checkpoint=None, seed=None,
                                   extra={"pseudonymised_columns": columns, "method": "HMAC-SHA256, shape-preserving"})
    print(f"released {len(out):,} rows with {columns} pseudonymised to {path}\nmanifest: {manifest}", flush=True)
    return {"output": str(path), "manifest": str(manifest)}


def generate(cfg: DictConfig) -> dict:
    mode = check_choice("mode", cfg.get("mode", "sample"), MODES)
    return sample(cfg) if mode == "sample" else release(cfg)


@hydra.main(version_base="1.3", config_path="configs", config_name="generate.yaml")
def main(cfg: DictConfig) -> None:
    run_cli(generate, cfg)


if __name__ == "__main__":
    main()
