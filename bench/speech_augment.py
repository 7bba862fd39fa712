"""Side-by-side benchmark of a speech augmentation chain, in one run: ours (speech.perturb) against
torch-audiomentations on a comparable chain, on the same batch of real clips.

Chain, every transform applied to every clip (p = 1), parameters drawn per clip:
  pitch shift uniform in [-4, +4] semitones -> gain uniform in [-6, +6] dB -> coloured noise at an SNR uniform in
  [10, 30] dB with spectral decay uniform in [-2, 2] (1/f^decay power; 0 white, 1 pink, 2 brown).
- ours: ``speech.perturb.pitch_shift`` (phase-vocoder stretch + polyphase resampling; clips that share a shift are
  processed together: shifts are drawn on the resampler's 1/100 ratio grid, as torch-pitch-shift also snaps its
  shifts to ratios that factor into small primes), ``gain``, ``colored_noise``;
- reference: ``torch_audiomentations.Compose([PitchShift(-4, 4, p=1), Gain(-6, 6, p=1),
  AddColoredNoise(10, 30, -2, 2, p=1)])`` in ``per_example`` mode (its PitchShift picks among the ratios
  torch-pitch-shift offers in that range, per clip).

Batch: the first ``--clips`` hedgewars voice clips (Debian ``hedgewars-data``), 2 s at 16 kHz, mono. Both sides run
single-threaded (``torch.set_num_threads(1)``) in ``torch.inference_mode``; each call is timed in process CPU time
(what one core spent; on a shared machine wall time also counts waits for a core, so it is recorded beside it),
the median of ``--repeats`` alternating rounds after one warm-up call each. The ratio is ours / reference in
clips per CPU second (above 1: ours is faster); the real-time factor per CPU core is seconds of audio augmented
per CPU second.

    .venv/bin/python bench/speech_augment.py            # about a minute on 2 cores
Writes ``bench/results/speech_augment.json`` (atomically) and prints a table. Needs the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules.speech_readers import FolderSource  # noqa: E402
from scarce.io import write_json  # noqa: E402
from speech import perturb as P  # noqa: E402
from speech.audio import fix_length  # noqa: E402

SR, SECONDS = 16000, 2.0
SEMITONES, GAIN_DB, SNR_DB, DECAY = 4.0, 6.0, (10.0, 30.0), 2.0
VOICES = Path("/usr/share/games/hedgewars/Data/Sounds/voices")


def real_batch(clips: int) -> torch.Tensor:
    raw = FolderSource(str(VOICES)).read(SR)
    n = int(SR * SECONDS)
    waves = [fix_length(w, n) for w in raw.waves[:clips]]
    return torch.from_numpy(np.stack(waves))


def ours(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    b = len(x)
    st = (torch.rand(b, generator=g) * 2 - 1) * SEMITONES
    ratio = torch.round(100 * 2 ** (st / 12)) / 100  # the resampler's 1/100 grid (see the module docstring)
    y = x.clone()
    for direction, rows in ((1.0, ratio > 1), (-1.0, ratio < 1)):
        if rows.any():
            sev = (12 * torch.log2(ratio[rows]).abs() / SEMITONES).clamp(0, 1)
            y[rows] = P.pitch_shift(x[rows], SR, sev, max_semitones=SEMITONES, direction=direction)
    y = P.gain(y, (torch.rand(b, generator=g) * 2 - 1) * GAIN_DB)
    snr = SNR_DB[0] + (SNR_DB[1] - SNR_DB[0]) * torch.rand(b, generator=g)
    return P.colored_noise(y, snr, (torch.rand(b, generator=g) * 2 - 1) * DECAY, SR, generator=g)


def reference():
    from torch_audiomentations import AddColoredNoise, Compose, Gain, PitchShift

    chain = Compose([PitchShift(-SEMITONES, SEMITONES, p=1.0, sample_rate=SR, output_type="tensor"),
                     Gain(-GAIN_DB, GAIN_DB, p=1.0, output_type="tensor"),
                     AddColoredNoise(SNR_DB[0], SNR_DB[1], -DECAY, DECAY, p=1.0, sample_rate=SR,
                                     output_type="tensor")], output_type="tensor")
    return lambda x, g: chain(x[:, None], sample_rate=SR)[:, 0]


def timed(fn, x: torch.Tensor, g: torch.Generator) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call. CPU time is what one core spent: on a shared
    machine wall time also counts the waits for a core."""
    c, t = time.process_time(), time.perf_counter()
    y = fn(x, g)
    cpu, wall = time.process_time() - c, time.perf_counter() - t
    if y.shape != x.shape or not torch.isfinite(y).all():
        raise RuntimeError(f"bad output {tuple(y.shape)}")
    return cpu, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "speech_augment.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    import torch_audiomentations

    x = real_batch(a.clips)
    sides = {"ours": ours, "torch_audiomentations": reference()}
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
    with torch.inference_mode():
        for name, fn in sides.items():
            timed(fn, x, g)  # warm-up
        for r in range(a.repeats):
            order = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for name in order:
                times[name].append(timed(sides[name], x, g))
    audio_s = a.clips * SECONDS
    res = {"what": "augmentation chain pitch shift (+-4 st) -> gain (+-6 dB) -> coloured noise (SNR 10-30 dB, "
                   "decay -2..2), p=1, per clip",
           "data": f"{a.clips} real hedgewars clips x {SECONDS} s at {SR} Hz (mono, float32)",
           "threads": 1, "repeats": a.repeats, "sides": {}}
    for name, ts in times.items():
        cpu = statistics.median(c for c, _ in ts)
        wall = statistics.median(w for _, w in ts)
        res["sides"][name] = {"cpu_seconds_per_batch_median": cpu, "wall_seconds_per_batch_median": wall,
                              "cpu_seconds_per_batch": [c for c, _ in ts], "wall_seconds_per_batch": [w for _, w in ts],
                              "clips_per_cpu_s": a.clips / cpu, "realtime_factor_per_core": audio_s / cpu}
    res["ratio_ours_over_reference"] = (res["sides"]["ours"]["clips_per_cpu_s"]
                                        / res["sides"]["torch_audiomentations"]["clips_per_cpu_s"])
    res["ratio_wall"] = (res["sides"]["torch_audiomentations"]["wall_seconds_per_batch_median"]
                         / res["sides"]["ours"]["wall_seconds_per_batch_median"])
    res["goals"] = {"ratio": 3.0, "realtime_factor_per_core": 200.0}
    res["env"] = {"torch": torch.__version__, "torch_audiomentations": torch_audiomentations.__version__,
                  "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                  "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    write_json(a.out, res)
    print(f"{'side':<24}{'cpu s/batch':>12}{'wall s/batch':>13}{'clips/cpu s':>12}{'RTF/core':>10}")
    for name, r in res["sides"].items():
        print(f"{name:<24}{r['cpu_seconds_per_batch_median']:>12.3f}{r['wall_seconds_per_batch_median']:>13.3f}"
              f"{r['clips_per_cpu_s']:>12.1f}{r['realtime_factor_per_core']:>10.0f}")
    print(f"ratio ours / torch-audiomentations: {res['ratio_ours_over_reference']:.2f}x CPU time, "
          f"{res['ratio_wall']:.2f}x wall  -> {a.out}")


if __name__ == "__main__":
    main()
