"""Alignments (TextGrid, CTM), the acoustic segment detector, profiles, and targeted augmentation: perturbations
reach the target segments only, every other sample stays exactly as it was."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from scarce.errors import ConfigError, DataError
from speech.alignment import Segment, detect_segments, matches, phone_class, read_ctm, read_textgrid, target_mask
from speech.targeting import Profile, TargetedAugmenter, load_profile

SR = 16000
ROOT = Path(__file__).resolve().parents[1]

LONG_TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 0.6
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 0.6
        intervals: size = 1
        intervals [1]:
            xmin = 0
            xmax = 0.6
            text = "stop"
    item [2]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 0.6
        intervals: size = 5
        intervals [1]:
            xmin = 0
            xmax = 0.1
            text = ""
        intervals [2]:
            xmin = 0.1
            xmax = 0.2
            text = "S"
        intervals [3]:
            xmin = 0.2
            xmax = 0.3
            text = "T"
        intervals [4]:
            xmin = 0.3
            xmax = 0.5
            text = "AA1"
        intervals [5]:
            xmin = 0.5
            xmax = 0.6
            text = "P"
'''

SHORT_TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"

0
0.6
<exists>
2
"TextTier"
"marks"
0
0.6
1
0.3
"peak"
"IntervalTier"
"segs"
0
0.6
3
0
0.2
"sil"
0.2
0.4
"ʃ"
0.4
0.6
"a"
'''


def test_phone_classes():
    assert phone_class("AA1") == "vowel" and phone_class("sh") == "fricative" and phone_class("JH") == "affricate"
    assert phone_class("") == "silence" and phone_class("sp") == "silence" and phone_class("ʃ") == "fricative"
    assert phone_class("aː") == "vowel" and phone_class("@@") == "other"


def test_textgrid_long_format_picks_the_phone_tier(tmp_path):
    p = tmp_path / "a.TextGrid"
    p.write_text(LONG_TEXTGRID)
    segs = read_textgrid(p)
    assert [s.label for s in segs] == ["", "S", "T", "AA1", "P"]
    assert [s.cls for s in segs] == ["silence", "fricative", "plosive", "vowel", "plosive"]
    assert segs[3].start == pytest.approx(0.3) and segs[3].end == pytest.approx(0.5)
    assert [s.label for s in read_textgrid(p, tier="words")] == ["stop"]
    with pytest.raises(DataError, match=r"no tier 'syllables'; tiers: \['phones', 'words'\]"):
        read_textgrid(p, tier="syllables")


def test_textgrid_short_format_utf16_skips_point_tiers(tmp_path):
    p = tmp_path / "b.TextGrid"
    p.write_bytes(SHORT_TEXTGRID.encode("utf-16"))  # Praat writes UTF-16 when labels are not ASCII
    segs = read_textgrid(p)
    assert [(s.label, s.cls) for s in segs] == [("sil", "silence"), ("ʃ", "fricative"), ("a", "vowel")]


def test_bad_textgrids_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.TextGrid"
    bad.write_text("hello")
    with pytest.raises(DataError, match="not a Praat text TextGrid"):
        read_textgrid(bad)
    cut = tmp_path / "cut.TextGrid"
    cut.write_text(LONG_TEXTGRID[: LONG_TEXTGRID.index("intervals [4]")])
    with pytest.raises(DataError, match="truncated or malformed"):
        read_textgrid(cut)
    with pytest.raises(DataError, match="no such file"):
        read_textgrid(tmp_path / "missing.TextGrid")


def test_ctm_groups_by_utterance_in_time_order(tmp_path):
    p = tmp_path / "a.ctm"
    p.write_text(";; phone alignment\nutt1 1 0.20 0.10 T\nutt1 1 0.00 0.20 S 0.9\nutt2 A 0.0 0.5 AH0\n\n")
    out = read_ctm(p)
    assert sorted(out) == ["utt1", "utt2"]
    assert [(s.label, s.start, s.end) for s in out["utt1"]] == [("S", 0.0, 0.2), ("T", 0.2, pytest.approx(0.3))]
    p.write_text("utt1 1 0.0 -0.1 S\n")
    with pytest.raises(DataError, match=r"line 1: 'utt1 1 0.0 -0.1 S' is not 'utt channel start duration token'"):
        read_ctm(p)


def test_matches_groups_clusters_and_labels():
    s, t, a = Segment(0, 1, "S", "fricative"), Segment(1, 2, "T", "plosive"), Segment(2, 3, "AA", "vowel")
    assert matches(s, {"obstruent"}) and not matches(a, {"obstruent"}) and matches(a, {"aa"})
    assert matches(s, {"cluster"}, (None, t)) and not matches(t, {"cluster"}, (None, a))
    mask = target_mask([s, t, a], {"plosive"}, 3 * SR, SR)
    assert mask.sum() == SR and mask[SR:2 * SR].all()


def utterance() -> tuple[torch.Tensor, list[tuple[str, float, float]]]:
    """(T,) 0.2 s silence, 0.3 s vowel-like harmonics (150 Hz), 0.2 s frication (noise above 3 kHz), 0.3 s vowel,
    0.2 s silence; and the true (class, start, end)."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(int(0.3 * SR)) / SR
    vowel = sum(torch.sin(2 * math.pi * 150 * k * t) / k for k in range(1, 8)) * 0.3
    noise = torch.fft.rfft(torch.randn(int(0.2 * SR), generator=g))
    noise[: int(3000 / (SR / (0.2 * SR)))] = 0
    fric = torch.fft.irfft(noise, n=int(0.2 * SR))
    fric = 0.2 * fric / fric.abs().max()
    sil = torch.zeros(int(0.2 * SR))
    x = torch.cat([sil, vowel, fric, vowel, sil]).float()
    truth = [("silence", 0, 0.2), ("vowel", 0.2, 0.5), ("fricative", 0.5, 0.7), ("vowel", 0.7, 1.0),
             ("silence", 1.0, 1.2)]
    return x, truth


def test_detector_finds_silence_vowels_and_frication():
    x, truth = utterance()
    segs = detect_segments(x[None], SR)[0]
    assert [s.cls for s in segs] == [c for c, _, _ in truth]
    for s, (_, a, b) in zip(segs, truth):
        assert abs(s.start - a) <= 0.03 and abs(s.end - b) <= 0.03  # 25 ms frames


def _non_target_equal(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> bool:
    return torch.equal(x[~mask], y[~mask])


def test_targeted_mode_changes_only_target_segments_from_alignments():
    x, truth = utterance()
    segs = [Segment(a, b, c[:3], c) for c, a, b in truth]
    prof = Profile.from_dict({"name": "t", "segments": "alignment", "perturbations": [
        {"name": "imprecise_consonants", "severity": 1.0, "targets": ["obstruent"]},
        {"name": "hypernasality", "severity": 0.8, "targets": ["vowel"]}]})
    y = TargetedAugmenter(prof, SR)(x[None], torch.Generator().manual_seed(0), segments=[segs])[0]
    fric = target_mask(segs, {"obstruent"}, len(x), SR)
    vow = target_mask(segs, {"vowel"}, len(x), SR)
    assert y.shape == x.shape and _non_target_equal(x, y, fric | vow)
    assert (y[fric] - x[fric]).pow(2).mean() > 0.1 * x[fric].pow(2).mean()  # the frication was weakened
    assert not torch.equal(y[vow], x[vow])


def test_targeted_mode_with_the_detector_and_global_mode():
    x, _ = utterance()
    spec = {"name": "imprecise_consonants", "severity": 1.0, "targets": ["obstruent"]}
    y = TargetedAugmenter({"name": "t", "perturbations": [spec]}, SR)(x[None])[0]
    mask = target_mask(detect_segments(x[None], SR)[0], {"obstruent"}, len(x), SR)
    assert 0.15 * SR < mask.sum() < 0.25 * SR and _non_target_equal(x, y, mask)
    glob = load_profile({"name": "t", "perturbations": [spec]}).as_global()
    z = TargetedAugmenter(glob, SR)(x[None])[0]
    assert not torch.equal(z[~mask], x[~mask])  # global mode touches the vowels too


def test_length_changing_perturbation_on_target_segments_only():
    x, truth = utterance()
    segs = [Segment(a, b, c[:3], c) for c, a, b in truth]
    prof = {"name": "p", "segments": "alignment",
            "perturbations": [{"name": "prolong", "severity": 1.0, "targets": ["vowel"], "params": {"max_factor": 2}},
                              {"name": "pauses", "severity": 1.0, "targets": ["fricative"],
                               "params": {"max_pause_s": 0.1}}]}
    y = TargetedAugmenter(prof, SR)(x[None], segments=[segs])[0]
    # two 0.3 s vowels doubled (+0.6 s) and one 0.1 s pause: 1.2 s -> 1.9 s
    assert len(y) == pytest.approx(1.9 * SR, abs=4)
    n_fric = int(0.2 * SR)
    fric_out = y[int(0.9 * SR):int(0.9 * SR) + n_fric]  # after silence 0.2 + vowel 0.6 + pause 0.1
    pause = y[int(0.8 * SR):int(0.9 * SR)]
    assert torch.equal(pause, torch.zeros_like(pause))
    assert torch.equal(fric_out, x[int(0.5 * SR):int(0.7 * SR)])
    assert torch.equal(y[: int(0.2 * SR)], x[: int(0.2 * SR)]) and torch.equal(y[-int(0.2 * SR):], x[-int(0.2 * SR):])
    assert TargetedAugmenter(prof, SR).batch(x[None], segments=[segs]).shape == (1, len(x))


def test_alignment_gaps_are_kept():
    x, _ = utterance()
    segs = [Segment(0.2, 0.5, "AA", "vowel"), Segment(0.7, 1.0, "AA", "vowel")]  # nothing aligned in between
    prof = {"name": "p", "segments": "alignment",
            "perturbations": [{"name": "prolong", "severity": 1.0, "targets": ["s"]}]}  # no segment matches
    y = TargetedAugmenter(prof, SR)(x[None], segments=[segs])[0]
    assert torch.equal(y, x)


def test_profile_files_and_bad_profiles(tmp_path):
    prof = load_profile(ROOT / "configs/augment/obstruents.yaml")
    assert prof.mode == "targeted" and prof.perturbations[0].name == "imprecise_consonants"
    assert prof.perturbations[0].severity == (0.4, 1.0) and "Stupid" in prof.focus_labels
    with pytest.raises(ConfigError, match=r"profile.perturbations\[0\].name='lisp' is not allowed; expected one of"):
        load_profile({"perturbations": [{"name": "lisp"}]})
    with pytest.raises(ConfigError, match=r"perturbations\[0\].severity=1.5 is not allowed"):
        load_profile({"perturbations": [{"name": "tempo", "severity": 1.5}]})
    with pytest.raises(ConfigError, match=r"perturbations\[0\].severity=\[0.1, 0.2, 0.3\]"):
        load_profile({"perturbations": [{"name": "tempo", "severity": [0.1, 0.2, 0.3]}]})
    with pytest.raises(ConfigError, match=r"profile.mode='local' is not allowed"):
        load_profile({"mode": "local", "perturbations": [{"name": "tempo"}]})
    with pytest.raises(ConfigError, match=r"perturbations\[0\].strength is not a field"):
        load_profile({"perturbations": [{"name": "tempo", "strength": 1}]})
    with pytest.raises(ConfigError, match="no such profile file"):
        load_profile(tmp_path / "none.yaml")
    aligned = load_profile({"segments": "alignment", "perturbations": [{"name": "tempo", "targets": ["vowel"]}]})
    with pytest.raises(DataError, match="no alignments were given"):
        TargetedAugmenter(aligned, SR)(torch.zeros(1, SR))
