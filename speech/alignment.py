"""Phone segments of an utterance: from Praat TextGrids, from CTM files, or from a built-in acoustic detector.

A segment is (start s, end s, label, phonetic class). Classes: vowel, plosive, fricative, affricate, nasal,
approximant, silence; ``obstruent`` = plosive | fricative | affricate, ``consonant`` = every non-vowel non-silence,
``cluster`` = a consonant next to another consonant. Phone labels are ARPAbet (stress digits ignored), common
IPA, or TIMIT/Kaldi silence marks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scarce.errors import ConfigError, DataError

_ARPABET = {
    "vowel": "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW AX AXR IX UX",
    "plosive": "P B T D K G DX Q",
    "fricative": "F V TH DH S Z SH ZH HH",
    "affricate": "CH JH",
    "nasal": "M N NG EM EN ENG NX",
    "approximant": "L R W Y EL",
}
_IPA = {
    "vowel": "a e i o u y ɑ æ ʌ ɔ ɛ ɝ ɚ ɪ ʊ ə ɒ ø œ ɐ ɨ ʉ ɯ ɤ",
    "plosive": "p b t d k g ʔ c ɟ q",
    "fricative": "f v θ ð s z ʃ ʒ h x ɣ ç ʁ χ",
    "affricate": "tʃ dʒ ts dz",
    "nasal": "m n ŋ ɲ ɱ",
    "approximant": "l r ɹ w j ɾ ʎ ɫ",
}
SILENCE_MARKS = {"", "sil", "sp", "spn", "pau", "#", "h#", "epi", "<sil>", "<eps>", "silence", "noise", "nsn"}
BASE_CLASSES = ("vowel", "plosive", "fricative", "affricate", "nasal", "approximant", "silence")
GROUPS = {"obstruent": {"plosive", "fricative", "affricate"},
          "consonant": {"plosive", "fricative", "affricate", "nasal", "approximant"}}
CLASSES = (*BASE_CLASSES, *GROUPS, "cluster", "other")
PHONE_CLASS = {p: c for c, ps in _ARPABET.items() for p in ps.split()} | {
    p: c for c, ps in _IPA.items() for p in ps.split()}


@dataclass(frozen=True)
class Segment:
    """A labelled stretch of one utterance; times in seconds."""

    start: float
    end: float
    label: str
    cls: str


def phone_class(label: str) -> str:
    """The phonetic class of a phone label (ARPAbet with or without stress digit, IPA, silence marks)."""
    raw = label.strip()
    if raw.lower() in SILENCE_MARKS:
        return "silence"
    key = re.sub(r"\d$", "", raw)  # AH0 -> AH
    if key.upper() in PHONE_CLASS:
        return PHONE_CLASS[key.upper()]
    key = key.lower().replace("ː", "")  # IPA length mark
    if key in PHONE_CLASS:
        return PHONE_CLASS[key]
    return PHONE_CLASS.get(key[:1], "other") if key[:1] in _ipa_firsts() else "other"


def _ipa_firsts() -> set[str]:
    return {p for ps in _IPA.values() for p in ps.split() if len(p) == 1}


def segments_from(items: list[tuple[float, float, str]]) -> list[Segment]:
    return [Segment(float(a), float(b), t, phone_class(t)) for a, b, t in items]


def matches(seg: Segment, targets: set[str], neighbours: tuple[Segment | None, Segment | None] = (None, None)
            ) -> bool:
    """Does a segment fall under any target: a class, a group, ``cluster`` or a phone label (case-insensitive)?"""
    if seg.cls in targets or any(seg.cls in GROUPS[g] for g in targets if g in GROUPS):
        return True
    if "cluster" in targets and seg.cls in GROUPS["consonant"]:
        if any(n is not None and n.cls in GROUPS["consonant"] for n in neighbours):
            return True
    label = re.sub(r"\d$", "", seg.label.strip()).lower()
    return label in targets


def target_mask(segments: list[Segment], targets: set[str], num_samples: int, sample_rate: int) -> torch.Tensor:
    """(T,) bool: samples inside a segment that matches ``targets``."""
    mask = torch.zeros(num_samples, dtype=torch.bool)
    for i, seg in enumerate(segments):
        nb = (segments[i - 1] if i else None, segments[i + 1] if i + 1 < len(segments) else None)
        if matches(seg, targets, nb):
            a, b = round(seg.start * sample_rate), round(seg.end * sample_rate)
            mask[max(a, 0):min(b, num_samples)] = True
    return mask


# ------------------------------------------------------------------------------------------------ readers
_TOKEN = re.compile(r'"((?:[^"]|"")*)"|\[\s*\d*\s*\]|(<exists>|<absent>)|(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)')


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    for enc in ("utf-8-sig", "utf-16"):
        try:
            text = raw.decode(enc)
            if text.strip():
                return text
        except UnicodeDecodeError:
            continue
    raise DataError(f"alignment file {str(path)!r} is neither UTF-8 nor UTF-16 text")


def read_textgrid(path: str | Path, tier: str | None = None) -> list[Segment]:
    """Intervals of one tier of a Praat TextGrid (long or short text format): the tier named ``tier``, else the
    first tier whose name contains "phone", else the first interval tier."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"TextGrid {str(p)!r}: no such file")
    text = _read_text(p)
    # both text formats hold the same sequence of values; the long one adds "key =" names and [i] indices
    values: list[str | float] = []
    for m in _TOKEN.finditer(text):
        if m.group(1) is not None:
            values.append(m.group(1).replace('""', '"'))
        elif m.group(3) is not None:
            values.append(float(m.group(3)))
    if len(values) < 2 or values[0] != "ooTextFile" or values[1] != "TextGrid":
        raise DataError(f"TextGrid {str(p)!r}: not a Praat text TextGrid (no 'ooTextFile' / 'TextGrid' header)")
    try:
        tiers = _parse_tiers(values[2:])
    except (IndexError, TypeError, ValueError) as e:
        raise DataError(f"TextGrid {str(p)!r} is truncated or malformed ({e})") from e
    if not tiers:
        raise DataError(f"TextGrid {str(p)!r} holds no interval tier")
    if tier is not None:
        if tier not in tiers:
            raise DataError(f"TextGrid {str(p)!r} has no tier {tier!r}; tiers: {sorted(tiers)}")
        return segments_from(tiers[tier])
    name = next((n for n in tiers if "phone" in n.lower()), next(iter(tiers)))
    return segments_from(tiers[name])


def _parse_tiers(v: list) -> dict[str, list[tuple[float, float, str]]]:
    """[xmin, xmax, size, (class, name, xmin, xmax, n, items...)*] -> {tier name: [(start, end, text)]}."""
    i = 3  # xmin, xmax, number of tiers
    n_tiers = int(v[2])
    out: dict[str, list] = {}
    for _ in range(n_tiers):
        cls, name, n = v[i], v[i + 1], int(v[i + 4])
        i += 5
        if cls == "IntervalTier":
            items = [(float(v[i + 3 * k]), float(v[i + 3 * k + 1]), str(v[i + 3 * k + 2])) for k in range(n)]
            i += 3 * n
            for a, b, _t in items:
                if not (math.isfinite(a) and math.isfinite(b)) or b < a:
                    raise ValueError(f"interval ({a}, {b}) in tier {name!r}")
            out[str(name)] = items
        elif cls == "TextTier":
            i += 2 * n  # point tiers: (time, mark) pairs, not segments
        else:
            raise ValueError(f"unknown tier class {cls!r}")
    return out


def read_ctm(path: str | Path) -> dict[str, list[Segment]]:
    """A CTM file (``utterance channel start duration token [confidence]`` per line, ``;;`` comments) ->
    {utterance id: segments in time order}."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"CTM {str(p)!r}: no such file")
    out: dict[str, list[tuple[float, float, str]]] = {}
    for n, line in enumerate(_read_text(p).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(";;"):
            continue
        parts = line.split()
        try:
            if len(parts) < 5:
                raise ValueError("fewer than 5 fields")
            start, dur = float(parts[2]), float(parts[3])
            if dur < 0 or not math.isfinite(start + dur):
                raise ValueError(f"start {parts[2]}, duration {parts[3]}")
        except ValueError as e:
            raise DataError(f"CTM {str(p)!r} line {n}: {line!r} is not 'utt channel start duration token' ({e})"
                            ) from e
        out.setdefault(parts[0], []).append((start, start + dur, parts[4]))
    return {u: segments_from(sorted(items)) for u, items in out.items()}


# ----------------------------------------------------------------------------------------------- detector
@dataclass(frozen=True)
class DetectorConfig:
    """Thresholds of the acoustic segment detector (frames of win_ms every hop_ms)."""

    win_ms: float = 25.0
    hop_ms: float = 10.0
    silence_db: float = -35.0  # frame energy below this, relative to the clip's loudest frame: silence
    high_hz: float = 2500.0  # obstruents put most of their energy above this (frication, bursts)
    high_ratio: float = 0.45  # share of energy above high_hz that marks an obstruent frame
    zcr: float = 0.25  # zero crossings per sample above which a frame is noise-like (obstruent)
    min_frames: int = 3  # runs shorter than this join their neighbour


def detect_segments(x: torch.Tensor, sample_rate: int, cfg: DetectorConfig = DetectorConfig()
                    ) -> list[list[Segment]]:
    """(B, T) waveforms -> per clip, segments labelled ``silence``, ``obstruent`` (class fricative: noise-like,
    energy high in frequency) or ``vowel`` (voiced, low-frequency energy), from frame energy, zero-crossing rate
    and the high-band energy ratio."""
    if x.ndim == 1:
        x = x[None]
    win = max(8, round(cfg.win_ms / 1000 * sample_rate))
    hop = max(1, round(cfg.hop_ms / 1000 * sample_rate))
    xf = x.float()
    if xf.shape[1] < win:
        xf = torch.nn.functional.pad(xf, (0, win - xf.shape[1]))
    frames = xf.unfold(1, win, hop)  # (B, N, win)
    energy = frames.pow(2).mean(2)
    db = 10 * torch.log10(energy + 1e-10)
    rel = db - db.max(1, keepdim=True).values
    signs = torch.sign(frames)
    zcr = (signs[..., 1:] != signs[..., :-1]).float().mean(2)
    spec = torch.fft.rfft(frames * torch.hann_window(win, device=x.device), dim=2).abs().pow(2)
    freqs = torch.fft.rfftfreq(win, 1 / sample_rate).to(x.device)
    high = spec[..., freqs >= min(cfg.high_hz, 0.6 * sample_rate / 2)].sum(2) / spec.sum(2).clamp_min(1e-12)
    silent = (rel < cfg.silence_db) | (energy < 1e-8)
    obstruent = ~silent & ((high > cfg.high_ratio) | (zcr > cfg.zcr))
    codes = torch.where(silent, 0, torch.where(obstruent, 1, 2)).cpu().numpy()
    names = {0: ("sil", "silence"), 1: ("obs", "fricative"), 2: ("voc", "vowel")}
    out = []
    n_real = codes.shape[1]  # every clip of a batch shares T, so one frame count serves all rows
    for row in codes:
        runs = _smooth_runs(row, cfg.min_frames)
        segs = []
        for code, a, b in runs:
            start = a * hop / sample_rate
            end = min(x.shape[1], (b - 1) * hop + win) / sample_rate if b == n_real else b * hop / sample_rate
            segs.append(Segment(start, end, *names[int(code)]))
        out.append(segs)
    return out


def _smooth_runs(codes: np.ndarray, min_frames: int) -> list[tuple[int, int, int]]:
    """Frame codes -> (code, first frame, end frame) runs; runs shorter than ``min_frames`` merge into the one
    before (or after, at the start)."""
    if len(codes) == 0:
        return []
    edges = np.flatnonzero(np.diff(codes)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(codes)]])
    runs = [[int(codes[a]), int(a), int(b)] for a, b in zip(starts, ends)]
    merged: list[list[int]] = []
    for r in runs:
        if merged and (r[2] - r[1] < min_frames or merged[-1][0] == r[0]):
            merged[-1][2] = r[2]
        else:
            merged.append(r)
    if len(merged) > 1 and merged[0][2] - merged[0][1] < min_frames:
        merged[1][1] = merged[0][1]
        merged.pop(0)
    return [tuple(r) for r in merged]


def check_targets(key: str, targets: list[str]) -> list[str]:
    """Targets are phonetic classes (see CLASSES) or phone labels; classes are lowercase words from CLASSES."""
    if not isinstance(targets, list) or not all(isinstance(t, str) and t.strip() for t in targets):
        raise ConfigError(f"{key}={targets!r} is not allowed; expected a list of phonetic classes {list(CLASSES)} "
                          "or phone labels")
    return [t.strip().lower() for t in targets]
