"""LightningDataModule for labelled speech: speaker-disjoint splits, an "atypical" held-out group, scarcity.

Clips are read once, silence-trimmed, peak-normalised and padded/cropped to ``duration_s``. Splits are by speaker,
so no voice is in two splits: ``atypical`` (the held-out atypical voices: named, or the ``n`` most atypical by
:func:`atypicality`), ``test`` (held-out typical voices), ``val`` and ``train``. ``scarcity`` keeps that fraction of
the training clips of each class (a prefix of one fixed permutation: smaller sets are subsets of larger ones).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from scarce.errors import ConfigError, DataError, check_range
from speech.audio import AudioSet, check_rate, fix_length

log = logging.getLogger(__name__)
AUDIO, LABEL, SPEAKER = "audio", "label", "speaker"  # batch keys: (B, T) float, (B,) int64, (B,) int64
SPLITS = ("train", "val", "test", "atypical")
UNKNOWN_SPEAKER = -1  # a clip whose speaker is not a training speaker (the nets map it to a shared "any" code)


class ClipRows(Dataset):
    """Waveforms, labels and speaker codes in memory, fetched a batch at a time as a batch dict."""

    def __init__(self, waves: torch.Tensor, labels: torch.Tensor, speakers: torch.Tensor):
        self.waves, self.labels, self.speakers = waves, labels, speakers

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {AUDIO: self.waves[i], LABEL: self.labels[i], SPEAKER: self.speakers[i]}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return {AUDIO: self.waves[idx], LABEL: self.labels[idx], SPEAKER: self.speakers[idx]}


def fetched_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch


def trim_silence(x: np.ndarray, sample_rate: int, top_db: float = 40.0) -> np.ndarray:
    """Cut leading/trailing 10 ms frames more than ``top_db`` below the clip's loudest frame."""
    hop = max(1, sample_rate // 100)
    n = len(x) // hop
    if n < 2:
        return x
    energy = (x[: n * hop].reshape(n, hop) ** 2).mean(1)
    db = 10 * np.log10(energy + 1e-12)
    loud = np.flatnonzero(db > db.max() - top_db)
    if not len(loud):
        return x
    return x[loud[0] * hop:(loud[-1] + 1) * hop]


def atypicality(waves: torch.Tensor, speakers: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Speaker -> distance of its mean voice statistics from the median speaker's, in robust z units.

    Statistics per clip: mean and std over loud frames of the 40-band log-mel spectrum; a speaker's vector is its
    clips' mean; each dimension is z-scored by the median and the median absolute deviation over speakers; the score
    is the RMS z over dimensions. Heavily processed or unusual voices (pitch, timbre, rate) score high.

    A dimension's MAD is floored at half the median MAD over dimensions: bands where most speakers sit at the same
    value (empty bands of band-limited 8 kHz recordings, all at the log floor) would otherwise give near-zero MADs and
    let one speaker's faint noise there outweigh every real difference."""
    from speech.mel import LogMel

    mel = LogMel(sample_rate)(waves)  # (N, 40, frames)
    frame_energy = mel.logsumexp(1)  # (N, frames)
    loud = frame_energy > frame_energy.amax(1, keepdim=True) - np.log(10 ** 3.5)  # within 35 dB of the peak
    w = loud[:, None].float()
    mean = (mel * w).sum(2) / w.sum(2).clamp_min(1)
    std = (((mel - mean[..., None]) ** 2 * w).sum(2) / w.sum(2).clamp_min(1)).sqrt()
    feats = torch.cat([mean, std], 1).numpy()
    speakers = np.asarray([str(s) for s in speakers])
    names = sorted(set(speakers.tolist()))
    per = np.stack([feats[speakers == s].mean(0) for s in names])
    med = np.median(per, 0)
    mad = np.median(np.abs(per - med), 0) * 1.4826
    mad = np.maximum(mad, 0.5 * float(np.median(mad)) + 1e-6)
    z = (per - med) / mad
    return {s: float(np.sqrt((z[i] ** 2).mean())) for i, s in enumerate(names)}


class SpeechDataModule(L.LightningDataModule):
    """Serves batches ``{AUDIO: (B, T) float in [-1, 1], LABEL: (B,) int64, SPEAKER: (B,) int64}``.

    source: a ``datamodules.speech_readers`` class. sample_rate Hz; duration_s: clip length after pad/crop.
    atypical_speakers: names, or an integer n (the n highest :func:`atypicality` scores), held out as "atypical".
    test_speakers: names, or an integer n (drawn with split_seed from the rest); val_speakers likewise.
    scarcity: fraction of each class's training clips kept (at least one). trim_db: silence trimming (null = off).
    """

    unit = "clips"

    def __init__(self, source: Any, sample_rate: int = 16000, duration_s: float = 2.0,
                 atypical_speakers: int | list[str] = 3, test_speakers: int | list[str] = 2,
                 val_speakers: int | list[str] = 1, split_seed: int = 0, scarcity: float = 1.0,
                 trim_db: float | None = 40.0, normalise: bool = True, batch_size: int = 32, num_workers: int = 0):
        super().__init__()
        if not callable(getattr(source, "read", None)):
            raise ConfigError(f"datamodule.source={type(source).__name__} is not allowed; expected a speech reader "
                              "from datamodules.speech_readers (via _target_)")
        self.source = source
        self.sample_rate = check_rate("datamodule.sample_rate", sample_rate)
        check_range("datamodule.duration_s", duration_s, 0.05, 60.0)
        self.num_samples = int(round(duration_s * sample_rate))
        for key, v in (("atypical_speakers", atypical_speakers), ("test_speakers", test_speakers),
                       ("val_speakers", val_speakers)):
            if isinstance(v, int) and not isinstance(v, bool):
                check_range(f"datamodule.{key}", v, 0, integer=True)
            elif not (isinstance(v, list) and all(isinstance(s, str) for s in v)):
                raise ConfigError(f"datamodule.{key}={v!r} is not allowed; expected a count or a list of speakers")
        self.held = {"atypical": atypical_speakers, "test": test_speakers, "val": val_speakers}
        self.split_seed = check_range("datamodule.split_seed", split_seed, 0, integer=True)
        self.scarcity = check_range("datamodule.scarcity", scarcity, 0.0, 1.0, low_inclusive=False)
        self.trim_db = check_range("datamodule.trim_db", trim_db, 1.0, allow_none=True)
        self.normalise = bool(normalise)
        self.batch_size = check_range("datamodule.batch_size", batch_size, 1, integer=True)
        self.num_workers = check_range("datamodule.num_workers", num_workers, 0, integer=True)
        self.sets: dict[str, AudioSet] = {}
        self.classes: list[str] = []
        self.train_speakers: list[str] = []
        self.split_speakers: dict[str, list[str]] = {}
        self.scores: dict[str, float] = {}

    # ---------------------------------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if self.sets:
            return
        raw = self.source.read(self.sample_rate)
        if len(raw) == 0:
            raise DataError(f"datamodule.source ({self.source.describe()}) holds no clips")
        waves = np.zeros((len(raw), self.num_samples), np.float32)
        lengths = np.zeros(len(raw), np.int64)
        for i, w in enumerate(raw.waves):
            w = trim_silence(w, self.sample_rate, self.trim_db) if self.trim_db else w
            peak = float(np.abs(w).max()) if len(w) else 0.0
            if self.normalise and peak > 0:
                w = w * (0.9 / peak)
            lengths[i] = min(len(w), self.num_samples)
            waves[i] = fix_length(w, self.num_samples)
        self.classes = sorted(set(raw.labels))
        labels = np.asarray([self.classes.index(x) for x in raw.labels], np.int64)
        speakers = np.asarray([str(s) for s in raw.speakers])
        full = AudioSet(waves, labels, self.classes, speakers, self.sample_rate, lengths, raw.source,
                        {"files": raw.files})
        self.split_speakers = self._speaker_splits(full)
        for split, names in self.split_speakers.items():
            self.sets[split] = full.subset(np.flatnonzero(np.isin(speakers, names)))
        self.sets["train"] = self.sets["train"].subset(self._scarce(self.sets["train"]))
        self.train_speakers = sorted({str(s) for s in self.sets["train"].speakers})  # plain str: saved in checkpoints
        log.info("%s", self.describe())

    def _speaker_splits(self, data: AudioSet) -> dict[str, list[str]]:
        names = sorted({str(s) for s in data.speakers})
        out: dict[str, list[str]] = {}
        rest = list(names)
        held = self.held["atypical"]
        if isinstance(held, int) and held:
            self.scores = atypicality(torch.from_numpy(data.waves), data.speakers, self.sample_rate)
            out["atypical"] = sorted(str(s) for s in sorted(rest, key=lambda s: -self.scores[s])[:held])
        else:
            out["atypical"] = list(held) if isinstance(held, list) else []
        rng = np.random.default_rng(self.split_seed)
        for split in ("atypical", "test", "val"):
            want = out.get(split) if split == "atypical" else self.held[split]
            if isinstance(want, int):
                want = sorted(rng.choice(sorted(rest), size=min(want, len(rest)), replace=False).tolist())
            unknown = [s for s in want if s not in names]
            if unknown:
                raise ConfigError(f"datamodule.{split}_speakers: unknown speakers {unknown}; the data has {names}")
            taken = [s for s in want if s not in rest]
            if taken:
                raise ConfigError(f"datamodule.{split}_speakers: {taken} are already in another split")
            out[split] = list(want)
            rest = [s for s in rest if s not in want]
        if not rest:
            raise DataError(f"datamodule: {len(names)} speakers leave none for training after holding out "
                            f"{ {k: len(v) for k, v in out.items()} }")
        out["train"] = rest
        return out

    def _scarce(self, data: AudioSet) -> np.ndarray:
        if self.scarcity == 1.0:
            return np.arange(len(data))
        perm = np.random.default_rng([self.split_seed, 1]).permutation(len(data))
        keep = []
        for c in range(len(self.classes)):
            members = perm[data.labels[perm] == c]
            keep.extend(members[: max(1, round(len(members) * self.scarcity))].tolist())
        return np.sort(np.asarray(keep, np.int64))

    # ------------------------------------------------------------------------------------------ inspection
    def real(self, split: str) -> AudioSet:
        if split not in SPLITS:
            raise ConfigError(f"split={split!r} is not allowed; expected one of {list(SPLITS)}")
        self.setup()
        return self.sets[split]

    def speaker_codes(self, data: AudioSet) -> torch.Tensor:
        """(N,) index into the training speakers, UNKNOWN_SPEAKER for anyone else."""
        lut = {s: i for i, s in enumerate(self.train_speakers)}
        return torch.as_tensor([lut.get(str(s), UNKNOWN_SPEAKER) for s in data.speakers], dtype=torch.long)

    def model_kwargs(self) -> dict[str, Any]:
        self.setup("fit")
        return {"sample_rate": self.sample_rate, "num_samples": self.num_samples, "num_classes": len(self.classes),
                "classes": list(self.classes), "num_speakers": len(self.train_speakers),
                "speakers": list(self.train_speakers)}

    def train_size(self) -> int:
        return len(self.real("train"))

    def generation_kwargs(self, n: int, seed: int = 0) -> dict[str, Any]:
        """Balanced labels (i % K) and training speakers in turn (i // K % S), so every pair is covered."""
        self.setup()
        k, s = len(self.classes), max(len(self.train_speakers), 1)
        i = torch.arange(n)
        return {"labels": i % k, "speakers": (i // k) % s}

    def describe(self) -> str:
        if not self.sets:
            return f"speech from {self.source.describe()} (not set up)"
        parts = ", ".join(f"{s} {len(self.sets[s])} clips / {len(self.split_speakers[s])} speakers" for s in SPLITS)
        held = f"; atypical voices {self.split_speakers['atypical']}" if self.split_speakers["atypical"] else ""
        return (f"speech from {self.source.describe()}: {parts}; {len(self.classes)} classes, {self.sample_rate} Hz, "
                f"{self.num_samples} samples{held}")

    # -------------------------------------------------------------------------------------------- loaders
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        data = self.real(split)
        if len(data) == 0:
            raise DataError(f"datamodule: the {split} split is empty; hold out more speakers for it")
        rows = ClipRows(torch.from_numpy(data.waves), torch.from_numpy(data.labels), self.speaker_codes(data))
        return DataLoader(rows, batch_size=min(self.batch_size, len(data)), shuffle=shuffle, collate_fn=fetched_batch,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader | list:
        if self.held["val"] in (0, []):  # val_speakers=0 (too few voices to spare one): Lightning skips validation
            return []
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
