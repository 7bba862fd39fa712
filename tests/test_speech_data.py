"""Speech readers on files the tests write in each layout (folder, Speech Commands, TORGO, UA-Speech), WAV/FLAC/OGG,
awkward files (stereo, 8 kHz, 44.1 kHz, silent, clipped, corrupt, too short), the datamodule's speaker-disjoint
splits and scarcity, and the audio set writer."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from datamodules.speech import AUDIO, LABEL, SPEAKER, SpeechDataModule, atypicality
from datamodules.speech_readers import FolderSource, SpeechCommandsSource, TorgoSource, UASpeechSource
from scarce.errors import ConfigError, DataError
from speech.audio import LABELS_CSV, AudioSet, read_audio, to_mono, write_audio_set

SR = 16000


def tone(f: float, seconds: float = 0.5, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * math.pi * f * t)).astype(np.float32)


def write(path: Path, x: np.ndarray, sr: int = SR, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, **kw)
    return path


def dominant(x: np.ndarray, sr: int = SR) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()])


# --------------------------------------------------------------------------------------------- audio files
@pytest.mark.parametrize("ext,kw", [(".wav", {}), (".flac", {}), (".ogg", {"format": "OGG", "subtype": "VORBIS"})])
def test_formats_read_to_mono_float_at_the_asked_rate(tmp_path, ext, kw):
    p = write(tmp_path / f"a{ext}", tone(440.0), **kw)
    x = read_audio(p, SR)
    assert x.dtype == np.float32 and x.ndim == 1 and abs(len(x) - SR // 2) <= 64
    assert dominant(x) == pytest.approx(440.0, abs=4) and np.abs(x).max() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("rate", [8000, 44100])
def test_other_rates_are_resampled(tmp_path, rate):
    p = write(tmp_path / "r.wav", tone(300.0, sr=rate), rate)
    x = read_audio(p, SR)
    assert len(x) == SR // 2 and dominant(x) == pytest.approx(300.0, abs=4)


def test_stereo_files_and_arrays_mix_down(tmp_path):
    left, right = tone(300.0), tone(300.0, amp=0.1)
    p = write(tmp_path / "s.wav", np.stack([left, right], 1))  # soundfile writes (T, C)
    assert np.allclose(read_audio(p, SR), (left + right) / 2, atol=1e-4)
    both = np.stack([left, right])
    assert np.allclose(to_mono(both), (left + right) / 2) and np.allclose(to_mono(both.T), (left + right) / 2)
    with pytest.raises(DataError, match=r"shape \(2, 2, 10\) is not allowed; expected \(T,\), \(T, C\) or \(C, T\)"):
        to_mono(np.zeros((2, 2, 10)))


def test_corrupt_empty_and_missing_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(DataError, match=r"bad.wav' could not be read .*expected WAV, FLAC or OGG"):
        read_audio(bad, SR)
    empty = write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    with pytest.raises(DataError, match="holds no samples"):
        read_audio(empty, SR)
    with pytest.raises(DataError, match="no such file"):
        read_audio(tmp_path / "none.wav", SR)


def speaker_folders(root: Path, speakers: dict[str, float], labels: dict[str, float], ext: str = ".wav") -> Path:
    """<root>/<speaker>/<label><ext>: each label a tone, each speaker scales its pitch."""
    for spk, scale in speakers.items():
        for lab, f in labels.items():
            write(root / spk / f"{lab}{ext}", tone(f * scale, 0.4))
    return root


def test_folder_source_filters_and_skips_bad_files(tmp_path):
    root = speaker_folders(tmp_path / "voices", {"a": 1.0, "b": 1.1, "c": 1.2}, {"yes": 300.0, "no": 500.0})
    write(root / "a" / "only_a.wav", tone(200.0))
    (root / "b" / "broken.wav").write_bytes(b"not audio")
    with pytest.raises(DataError, match="broken.wav' could not be read"):
        FolderSource(str(root)).read(SR)
    assert len(FolderSource(str(root), skip_bad=True).read(SR)) == 7  # broken: skipped with a warning
    clips = FolderSource(str(root), min_speakers=2).read(SR)
    assert sorted(set(clips.labels)) == ["no", "yes"] and len(clips) == 6  # only_a and broken: one speaker each
    assert sorted(set(clips.speakers)) == ["a", "b", "c"]
    with pytest.raises(DataError, match=r"none of the labels \['maybe'\] occur"):
        FolderSource(str(root), labels=["maybe"]).read(SR)
    with pytest.raises(DataError, match="no such folder"):
        FolderSource(str(tmp_path / "nowhere")).read(SR)


def test_speech_commands_layout(tmp_path):
    root = tmp_path / "sc"
    for lab in ("yes", "no"):
        for spk in ("0a1b", "ffe2"):
            write(root / lab / f"{spk}_nohash_0.wav", tone(300.0, 1.0))
    write(root / "_background_noise_" / "white.wav", np.zeros(SR, np.float32))
    (root / "testing_list.txt").write_text("yes/ffe2_nohash_0.wav\nno/ffe2_nohash_0.wav\n")
    clips = SpeechCommandsSource(str(root)).read(SR)
    assert len(clips) == 4 and sorted(set(clips.labels)) == ["no", "yes"]
    assert sorted(set(clips.speakers)) == ["0a1b", "ffe2"]
    assert [s for s, spk in zip(clips.split, clips.speakers) if spk == "ffe2"] == ["test", "test"]


def test_torgo_layout(tmp_path):
    root = tmp_path / "torgo"
    for spk in ("F01", "FC01"):
        sess = root / spk / "Session1"
        for i, text in enumerate(["Yes", "no.", "The quick brown fox", "[say Ah-P-Eee repeatedly]"]):
            write(sess / "wav_headMic" / f"{i:04d}.wav", tone(300.0))
            (sess / "prompts").mkdir(parents=True, exist_ok=True)
            (sess / "prompts" / f"{i:04d}.txt").write_text(text + "\n")
    clips = TorgoSource(str(root)).read(SR)
    assert sorted(zip(clips.speakers, clips.labels)) == [("F01", "no"), ("F01", "yes"), ("FC01", "no"),
                                                         ("FC01", "yes")]
    assert dict(zip(clips.speakers, clips.groups)) == {"F01": "dysarthric", "FC01": "control"}
    assert len(TorgoSource(str(root), single_words=False).read(SR)) == 6


def test_uaspeech_layout_with_word_list(tmp_path):
    root = tmp_path / "ua"
    for spk in ("M04", "CM04"):
        for code in ("C1", "D3"):
            for mic in ("M2", "M5"):
                write(root / "audio" / spk / f"{spk}_B1_{code}_{mic}.wav", tone(300.0))
    words = tmp_path / "words.csv"
    pd.DataFrame({"code": ["C1", "D3"], "word": ["command", "delta"]}).to_csv(words, index=False)
    clips = UASpeechSource(str(root), mics=["M5"], word_list=str(words)).read(SR)
    assert len(clips) == 4 and sorted(set(clips.labels)) == ["command", "delta"]
    assert dict(zip(clips.speakers, clips.groups)) == {"M04": "dysarthric", "CM04": "control"}
    with pytest.raises(DataError, match="no audio/ folder"):
        UASpeechSource(str(tmp_path)).read(SR)


def test_folders_of_one_speaker_stay_in_one_split(tmp_path, caplog):
    # two folders recorded by the same person (as Asterisk's en_US and es_MX Allison): one speaker, never split
    root = speaker_folders(tmp_path / "voices", {"en_A": 1.0, "es_A": 1.05, "fr_B": 1.1, "it_C": 1.2, "ru_D": 1.3},
                           {"1": 300.0, "2": 500.0})
    same = {"en_A": "A", "es_A": "A"}
    clips = FolderSource(str(root), same_speaker=same).read(SR)
    assert sorted(set(clips.speakers)) == ["A", "fr_B", "it_C", "ru_D"] and clips.speakers.count("A") == 4
    for seed in range(6):
        dm = SpeechDataModule(FolderSource(str(root), same_speaker=same), duration_s=0.5, atypical_speakers=0,
                              test_speakers=2, val_speakers=0, split_seed=seed)
        dm.setup()
        holders = [s for s in ("train", "test") if "A" in set(dm.real(s).speakers)]
        assert len(holders) == 1 and (dm.real(holders[0]).speakers == "A").sum() == 4
    with caplog.at_level(logging.WARNING, logger="datamodules.speech_readers"):
        assert sorted(set(FolderSource(str(root), same_speaker={"de_A": "A"}).read(SR).speakers))[0] == "en_A"
    assert "no speaker folders ['de_A']" in caplog.text
    with pytest.raises(ConfigError, match="same_speaker="):
        FolderSource(str(root), same_speaker={"en_A": ""})


# ---------------------------------------------------------------------------------------------- datamodule
@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> Path:
    """8 speakers x 3 labels; speaker 'odd' speaks an octave up and loud noise (the atypical one); awkward files:
    one silent, one clipped, one 8 kHz FLAC, one 44.1 kHz OGG stereo."""
    root = tmp_path_factory.mktemp("voices")
    labels = {"up": 300.0, "down": 450.0, "left": 600.0}
    speakers = {f"s{i}": 1 + 0.02 * i for i in range(7)}
    speaker_folders(root, speakers, labels)
    g = np.random.default_rng(0)
    for lab, f in labels.items():
        x = tone(2 * f, 0.4) + 0.3 * g.standard_normal(int(0.4 * SR)).astype(np.float32)
        write(root / "odd" / f"{lab}.wav", x / np.abs(x).max() * 0.5)
    write(root / "s0" / "up.wav", np.zeros(SR // 2, np.float32))  # silent
    write(root / "s1" / "up.wav", np.clip(3 * tone(300.0, 0.4), -1, 1))  # clipped
    (root / "s2" / "up.wav").unlink()
    write(root / "s2" / "up.flac", tone(300.0, 0.4, sr=8000), 8000)
    (root / "s3" / "up.wav").unlink()
    stereo = np.stack([tone(300.0, 0.4, sr=44100)] * 2, 1)
    write(root / "s3" / "up.ogg", stereo, 44100, format="OGG", subtype="VORBIS")
    return root


def test_datamodule_speaker_disjoint_splits_with_the_atypical_voice_held_out(voices):
    dm = SpeechDataModule(FolderSource(str(voices)), duration_s=0.5, atypical_speakers=1, test_speakers=2,
                          val_speakers=1, batch_size=4)
    dm.setup()
    assert dm.split_speakers["atypical"] == ["odd"]
    assert max(dm.scores, key=dm.scores.get) == "odd"
    spk = {s: set(dm.real(s).speakers) for s in ("train", "val", "test", "atypical")}
    assert sum(len(v) for v in spk.values()) == 8 and len(set.union(*spk.values())) == 8  # disjoint, all used
    train = dm.real("train")
    assert train.waves.shape[1] == 8000 and train.waves.dtype == np.float32
    assert np.isfinite(train.waves).all() and np.abs(train.waves).max() <= 0.9 + 1e-6
    batch = next(iter(dm.train_dataloader()))
    assert batch[AUDIO].shape == (4, 8000) and batch[LABEL].dtype == torch.int64
    assert (batch[SPEAKER] >= 0).all()  # training speakers have codes
    val = next(iter(dm.val_dataloader()))
    assert (val[SPEAKER] == -1).all()  # held-out speakers do not
    kw = dm.model_kwargs()
    assert kw["num_classes"] == 3 and kw["num_samples"] == 8000 and kw["num_speakers"] == len(spk["train"])
    # plain Python values only: they are saved as hyperparameters in weights_only checkpoints
    assert all(type(v) is str for v in kw["speakers"] + kw["classes"]) and type(kw["num_samples"]) is int


def test_awkward_files_come_out_right(voices):
    dm = SpeechDataModule(FolderSource(str(voices)), duration_s=0.5, atypical_speakers=["odd"], test_speakers=0,
                          val_speakers=0, trim_db=None)
    dm.setup()
    data = dm.real("train")
    up = data.classes.index("up")
    by = {str(s): data.waves[i] for i, s in enumerate(data.speakers) if data.labels[i] == up}
    assert np.abs(by["s0"]).max() == 0  # silent stays silent (no division by a zero peak)
    for s in ("s2", "s3"):  # the 8 kHz FLAC and the 44.1 kHz stereo OGG: 16 kHz mono 300 Hz tones
        assert dominant(by[s][:6400]) == pytest.approx(300.0, abs=4) and np.abs(by[s]).max() > 0.5


def test_scarcity_keeps_a_nested_fraction_per_class(voices):
    full = SpeechDataModule(FolderSource(str(voices)), duration_s=0.5, atypical_speakers=1, test_speakers=1,
                            val_speakers=1)
    half = SpeechDataModule(FolderSource(str(voices)), duration_s=0.5, atypical_speakers=1, test_speakers=1,
                            val_speakers=1, scarcity=0.5)
    a, b = full.real("train"), half.real("train")
    assert np.bincount(b.labels).tolist() == [round(5 * 0.5)] * 3 or np.bincount(b.labels).tolist() == [2] * 3
    rows_a = {w.tobytes() for w in a.waves}
    assert all(w.tobytes() in rows_a for w in b.waves)  # a subset of the full training set


def test_datamodule_bad_config_is_clear(voices):
    with pytest.raises(ConfigError, match="datamodule.source=str is not allowed"):
        SpeechDataModule("/data")
    with pytest.raises(ConfigError, match=r"datamodule.scarcity=0 is not allowed"):
        SpeechDataModule(FolderSource(str(voices)), scarcity=0)
    with pytest.raises(ConfigError, match=r"datamodule.sample_rate=100 is not allowed"):
        SpeechDataModule(FolderSource(str(voices)), sample_rate=100)
    dm = SpeechDataModule(FolderSource(str(voices)), atypical_speakers=["nobody"])
    with pytest.raises(ConfigError, match=r"datamodule.atypical_speakers: unknown speakers \['nobody'\]"):
        dm.setup()
    dm = SpeechDataModule(FolderSource(str(voices)), atypical_speakers=4, test_speakers=4, val_speakers=0)
    with pytest.raises(DataError, match="leave none for training"):
        dm.setup()


def test_atypicality_ranks_a_shifted_voice_highest():
    g = torch.Generator().manual_seed(0)
    t = torch.arange(SR // 2) / SR
    waves, speakers = [], []
    for s in range(5):
        for k in range(2):
            f = 200 * (1 + 0.01 * s) if s < 4 else 1500.0
            waves.append(0.5 * torch.sin(2 * math.pi * f * t) + 0.01 * torch.randn(len(t), generator=g))
            speakers.append(f"v{s}")
    scores = atypicality(torch.stack(waves), np.asarray(speakers), SR)
    assert max(scores, key=scores.get) == "v4"


def test_write_audio_set_round_trip(tmp_path):
    waves = np.stack([tone(300.0), tone(500.0)])
    data = AudioSet(waves, np.array([0, 1]), ["a", "b"], np.array(["x", "y"]), SR)
    out = write_audio_set(data, tmp_path / "syn")
    df = pd.read_csv(out / LABELS_CSV)
    assert df["label"].tolist() == ["a", "b"] and df["speaker"].tolist() == ["x", "y"]
    back = read_audio(out / df["file"][1], SR)
    assert np.abs(back - waves[1]).max() < 1e-3  # 16-bit PCM
    with pytest.raises(ConfigError, match="exists and is not empty"):
        write_audio_set(data, out)
    with pytest.raises(ConfigError, match="written to a folder"):
        write_audio_set(data, tmp_path / "syn.wav")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_atypicality_is_not_ruled_by_a_band_empty_for_most_speakers():
    # 8 kHz-like voices: no energy above 4 kHz except a faint hiss in one voice (at 16 kHz); the voice with the
    # clearly different pitch must still rank first (a near-zero MAD in the empty bands used to make the hiss win)
    g = torch.Generator().manual_seed(0)
    t = torch.arange(SR // 2) / SR
    waves, speakers = [], []
    for s in range(6):
        f = 150.0 * (1 + 0.02 * s) if s != 4 else 600.0
        for k in range(2):
            w = 0.5 * torch.sin(2 * math.pi * f * t)
            if s == 5:  # faint hiss confined to 6-7 kHz
                noise = torch.randn(len(t), generator=g)
                spec = torch.fft.rfft(noise)
                freqs = torch.fft.rfftfreq(len(t), 1 / SR)
                w = w + 1e-3 * torch.fft.irfft(spec * ((freqs > 6000) & (freqs < 7000)), len(t))
            waves.append(w)
            speakers.append(f"v{s}")
    scores = atypicality(torch.stack(waves), np.asarray(speakers), SR)
    assert max(scores, key=scores.get) == "v4", scores
    assert all(np.isfinite(v) and v < 1e3 for v in scores.values()), scores
