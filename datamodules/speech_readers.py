"""Readers of labelled speech on disk. Each returns :class:`RawClips` (mono float32 at the asked rate, any length).

Layouts:
- ``FolderSource``: ``<root>/<speaker>/[<subdir>/]<label>.<ext>`` (the hedgewars voice packs, the Asterisk prompts);
- ``SpeechCommandsSource``: ``<root>/<label>/<speaker>_nohash_<k>.wav`` with ``validation_list.txt`` and
  ``testing_list.txt`` (Warden 2018);
- ``TorgoSource``: ``<root>/<speaker>/Session<k>/<mic>/<NNNN>.wav`` with ``.../prompts/<NNNN>.txt`` (Rudzicz et al.
  2012; speakers ``FC*``/``MC*`` are controls);
- ``UASpeechSource``: ``<root>/audio/<speaker>/<speaker>_<block>_<word>_<mic>.wav`` (Kim et al. 2008; speakers
  ``C*`` are controls), word codes mapped to words by an optional CSV (``code,word``).
WAV, FLAC and OGG are read by soundfile; files are resampled and mixed down to mono as they are read.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scarce.errors import ConfigError, DataError, check_range
from speech.audio import AUDIO_SUFFIXES, check_rate, clean, read_audio

log = logging.getLogger(__name__)


@dataclass
class RawClips:
    """Clips as read: waves (list of (T_i,) float32), labels / speakers (str per clip), files, optional group
    ("control" / "dysarthric") and split ("train" / "val" / "test") per clip."""

    waves: list[np.ndarray]
    labels: list[str]
    speakers: list[str]
    files: list[str]
    source: str
    groups: list[str] | None = None
    split: list[str] | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.waves)


def _read_all(files: list[Path], sample_rate: int, skip_bad: bool) -> tuple[list[np.ndarray], list[int]]:
    """Read files; an unreadable one is an error, or (skip_bad) a warning and left out. Returns waves and the
    indices of the files kept."""
    waves, kept = [], []
    for i, f in enumerate(files):
        try:
            waves.append(clean(read_audio(f, sample_rate), key=str(f)))
            kept.append(i)
        except DataError as e:
            if not skip_bad:
                raise
            log.warning("skipped: %s", e)
    return waves, kept


def _filter_labels(labels: list[str], speakers: list[str], allowed: list[str] | None, min_speakers: int
                   ) -> np.ndarray:
    """Indices of clips whose label is allowed and spoken by at least ``min_speakers`` speakers."""
    lab = np.asarray(labels, dtype=object)
    keep = np.ones(len(lab), bool) if allowed is None else np.isin(lab, list(allowed))
    if min_speakers > 1:
        df = pd.DataFrame({"label": lab, "speaker": speakers})
        counts = df[keep].groupby("label")["speaker"].nunique()
        keep &= np.isin(lab, counts[counts >= min_speakers].index.to_numpy())
    return np.flatnonzero(keep)


def _select(clips: RawClips, idx: np.ndarray) -> RawClips:
    pick = lambda v: None if v is None else [v[i] for i in idx]  # noqa: E731
    return RawClips([clips.waves[i] for i in idx], pick(clips.labels), pick(clips.speakers), pick(clips.files),
                    clips.source, pick(clips.groups), pick(clips.split), dict(clips.meta))


class FolderSource:
    """``<root>/<speaker>/[<subdir>/]<label>.<ext>``: one folder per speaker, one file per label.

    speakers: glob of speaker folder names; same_speaker: folder -> speaker name, for folders recorded by one person
    (the Asterisk en_US and es_MX prompts are both Allison), so that splits by speaker keep them together; labels:
    keep only these (None = all); min_speakers: keep labels spoken by at least this many speakers; skip_bad: leave
    unreadable files out with a warning instead of failing.
    """

    def __init__(self, root: str, speakers: str = "*", subdir: str | None = None, labels: list[str] | None = None,
                 min_speakers: int = 1, skip_bad: bool = False, same_speaker: dict[str, str] | None = None):
        self.root, self.speaker_glob, self.subdir = Path(root), speakers, subdir
        same_speaker = dict(same_speaker or {})
        bad = {k: v for k, v in same_speaker.items() if not isinstance(v, str) or not v}
        if bad:
            raise ConfigError(f"datamodule.source.same_speaker={bad} is not allowed; expected folder: speaker name")
        self.same_speaker = {str(k): v for k, v in same_speaker.items()}
        self.labels = None if labels is None else [str(x) for x in labels]
        self.min_speakers = check_range("datamodule.source.min_speakers", min_speakers, 1, integer=True)
        self.skip_bad = skip_bad

    def describe(self) -> str:
        return f"speaker folders {self.root}/{self.speaker_glob}" + (f"/{self.subdir}" if self.subdir else "")

    def read(self, sample_rate: int) -> RawClips:
        check_rate("datamodule.sample_rate", sample_rate)
        if not self.root.is_dir():
            raise DataError(f"datamodule.source.root={str(self.root)!r}: no such folder")
        files, labels, speakers = [], [], []
        for spk in sorted(p for p in self.root.glob(self.speaker_glob) if p.is_dir() and not p.is_symlink()):
            folder = spk / self.subdir if self.subdir else spk
            if not folder.is_dir():
                continue
            for f in sorted(folder.iterdir()):
                if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file():
                    files.append(f)
                    labels.append(f.stem)
                    speakers.append(spk.name)
        if not files:
            raise DataError(f"datamodule.source: no {'/'.join(AUDIO_SUFFIXES)} files under {self.describe()}")
        unknown = sorted(set(self.same_speaker) - set(speakers))
        if unknown:  # a pack not installed here, or a typo: say so, but read what is there
            log.warning("datamodule.source.same_speaker: no speaker folders %s under %s; found %s", unknown,
                        self.describe(), sorted(set(speakers)))
        speakers = [self.same_speaker.get(s, s) for s in speakers]
        idx = _filter_labels(labels, speakers, self.labels, self.min_speakers)
        if not len(idx):
            raise DataError(f"datamodule.source: none of the labels {self.labels} occur in {self.describe()} "
                            f"(found e.g. {sorted(set(labels))[:10]})")
        files, labels, speakers = [files[i] for i in idx], [labels[i] for i in idx], [speakers[i] for i in idx]
        waves, kept = _read_all(files, sample_rate, self.skip_bad)
        return RawClips(waves, [labels[i] for i in kept], [speakers[i] for i in kept],
                        [str(files[i]) for i in kept], self.describe())


class SpeechCommandsSource:
    """Speech Commands layout: ``<root>/<label>/<speaker>_nohash_<k>.wav``; the split lists, where present, give
    val/test (``_background_noise_`` is not a label)."""

    def __init__(self, root: str, labels: list[str] | None = None, skip_bad: bool = False):
        self.root = Path(root)
        self.labels = None if labels is None else [str(x) for x in labels]
        self.skip_bad = skip_bad

    def describe(self) -> str:
        return f"Speech Commands folder {self.root}"

    def read(self, sample_rate: int) -> RawClips:
        if not self.root.is_dir():
            raise DataError(f"datamodule.source.root={str(self.root)!r}: no such folder")
        lists = {}
        for split, name in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
            p = self.root / name
            if p.is_file():
                lists.update({line.strip(): split for line in p.read_text().splitlines() if line.strip()})
        files, labels, speakers, split = [], [], [], []
        for d in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("_")):
            if self.labels is not None and d.name not in self.labels:
                continue
            for f in sorted(d.glob("*.wav")):
                m = re.match(r"(.+?)_nohash_\d+$", f.stem)
                files.append(f)
                labels.append(d.name)
                speakers.append(m.group(1) if m else f.stem)
                split.append(lists.get(f"{d.name}/{f.name}", "train"))
        if not files:
            raise DataError(f"datamodule.source: no <label>/*.wav files in {self.describe()}")
        waves, kept = _read_all(files, sample_rate, self.skip_bad)
        return RawClips(waves, [labels[i] for i in kept], [speakers[i] for i in kept], [str(files[i]) for i in kept],
                        self.describe(), split=[split[i] for i in kept] if lists else None)


class TorgoSource:
    """TORGO layout: ``<root>/<speaker>/Session<k>/<mic>/<NNNN>.wav`` with the prompt text in
    ``<root>/<speaker>/Session<k>/prompts/<NNNN>.txt``. Labels are prompts (lower case); ``single_words`` keeps
    one-word prompts (TORGO also has sentences and picture descriptions)."""

    def __init__(self, root: str, mic: str = "wav_headMic", labels: list[str] | None = None,
                 single_words: bool = True, min_speakers: int = 1, skip_bad: bool = False):
        self.root, self.mic, self.single_words = Path(root), mic, single_words
        self.labels = None if labels is None else [str(x).lower() for x in labels]
        self.min_speakers = check_range("datamodule.source.min_speakers", min_speakers, 1, integer=True)
        self.skip_bad = skip_bad

    def describe(self) -> str:
        return f"TORGO folder {self.root} ({self.mic})"

    def read(self, sample_rate: int) -> RawClips:
        if not self.root.is_dir():
            raise DataError(f"datamodule.source.root={str(self.root)!r}: no such folder")
        files, labels, speakers, groups = [], [], [], []
        for wav in sorted(self.root.glob(f"*/Session*/{self.mic}/*.wav")):
            prompt = wav.parent.parent / "prompts" / f"{wav.stem}.txt"
            if not prompt.is_file():
                continue
            text = prompt.read_text(errors="replace").strip().lower().rstrip(".")
            if not text or "/" in text or "[" in text or (self.single_words and len(text.split()) != 1):
                continue  # picture prompts name an image file; bracketed notes are instructions
            spk = wav.parents[2].name
            files.append(wav)
            labels.append(text)
            speakers.append(spk)
            groups.append("control" if re.match(r"^[FM]C", spk) else "dysarthric")
        if not files:
            raise DataError(f"datamodule.source: no prompted {self.mic} recordings in {self.describe()}")
        idx = _filter_labels(labels, speakers, self.labels, self.min_speakers)
        waves, kept = _read_all([files[i] for i in idx], sample_rate, self.skip_bad)
        sel = [idx[k] for k in kept]
        return RawClips(waves, [labels[i] for i in sel], [speakers[i] for i in sel], [str(files[i]) for i in sel],
                        self.describe(), groups=[groups[i] for i in sel])


class UASpeechSource:
    """UA-Speech layout: ``<root>/audio/<speaker>/<speaker>_<block>_<word>_<mic>.wav``; labels are word codes
    (``C1``, ``D3``, ``UW12``...) or, with ``word_list`` (CSV with columns code, word), the words."""

    def __init__(self, root: str, mics: list[str] | None = None, word_list: str | None = None,
                 labels: list[str] | None = None, min_speakers: int = 1, skip_bad: bool = False):
        self.root, self.mics = Path(root), mics
        self.word_list = word_list
        self.labels = None if labels is None else [str(x) for x in labels]
        self.min_speakers = check_range("datamodule.source.min_speakers", min_speakers, 1, integer=True)
        self.skip_bad = skip_bad

    def describe(self) -> str:
        return f"UA-Speech folder {self.root}"

    def read(self, sample_rate: int) -> RawClips:
        audio = self.root / "audio"
        if not audio.is_dir():
            raise DataError(f"datamodule.source.root={str(self.root)!r}: no audio/ folder (UA-Speech layout)")
        words = {}
        if self.word_list:
            df = pd.read_csv(self.word_list)
            if not {"code", "word"} <= set(df.columns):
                raise DataError(f"datamodule.source.word_list={self.word_list!r}: needs columns code, word; has "
                                f"{list(df.columns)}")
            words = dict(zip(df["code"].astype(str), df["word"].astype(str)))
        files, labels, speakers, groups = [], [], [], []
        for wav in sorted(audio.glob("*/*.wav")):
            m = re.match(r"^([A-Z]+\d+)_(B\d+)_([A-Z]+\d*)_(M\d+)$", wav.stem)
            if not m or (self.mics and m.group(4) not in self.mics):
                continue
            spk, code = m.group(1), m.group(3)
            files.append(wav)
            labels.append(words.get(code, code))
            speakers.append(spk)
            groups.append("control" if spk.startswith("C") else "dysarthric")
        if not files:
            raise DataError(f"datamodule.source: no <speaker>_<block>_<word>_<mic>.wav files in {self.describe()}")
        idx = _filter_labels(labels, speakers, self.labels, self.min_speakers)
        waves, kept = _read_all([files[i] for i in idx], sample_rate, self.skip_bad)
        sel = [idx[k] for k in kept]
        return RawClips(waves, [labels[i] for i in sel], [speakers[i] for i in sel], [str(files[i]) for i in sel],
                        self.describe(), groups=[groups[i] for i in sel])
