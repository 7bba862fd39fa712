"""Perturbations: severity 0 is identity, lengths follow the rate, pitch moves F0 by the asked ratio, and what
users feed in (short, silent, clipped clips; bad shapes or severities) is handled or a clear error."""

from __future__ import annotations

import math

import pytest
import torch

from scarce.errors import ConfigError, DataError
from speech import perturb as P

SR = 16000


def harmonic(f0: float = 200.0, seconds: float = 1.0, sr: int = SR, harmonics: int = 5) -> torch.Tensor:
    """(T,) a harmonic tone: partials k * f0 with amplitude 1/k, peak about 0.5."""
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    x = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, harmonics + 1))
    return (0.5 * x / x.abs().max()).float()


def f0_of(x: torch.Tensor, sr: int = SR, lo: float = 80.0, hi: float = 500.0) -> float:
    """Fundamental by the strongest spectral peak in [lo, hi] Hz (Hann window, 8x zero padding, parabolic peak)."""
    n = len(x)
    spec = torch.fft.rfft(x.double() * torch.hann_window(n, dtype=torch.float64), n=8 * n).abs()
    freqs = torch.fft.rfftfreq(8 * n, 1 / sr)
    band = (freqs >= lo) & (freqs <= hi)
    i = int(torch.nonzero(band).flatten()[spec[band].argmax()])
    a, b, c = spec[i - 1].log(), spec[i].log(), spec[i + 1].log()
    return float(freqs[i] + 0.5 * (a - c) / (a - 2 * b + c) * (freqs[1] - freqs[0]))


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.stack([harmonic(), 0.1 * torch.randn(SR, generator=g)])


@pytest.mark.parametrize("name", sorted(P.PERTURBATIONS))
def test_severity_zero_is_identity_and_positive_changes(batch, name):
    fn = P.PERTURBATIONS[name]
    assert torch.equal(fn(batch, SR, 0.0), batch)
    y = fn(batch, SR, 0.6, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(y).all() and y.shape[0] == 2
    if name not in P.LENGTH_CHANGING:
        assert y.shape == batch.shape
    n = min(y.shape[1], batch.shape[1])
    assert (y[:, :n] - batch[:, :n]).abs().mean() > 1e-3, f"{name} at severity 0.6 changed nothing"


def test_per_clip_severity_leaves_zero_rows_exact(batch):
    for name in sorted(set(P.PERTURBATIONS) - P.LENGTH_CHANGING):
        y = P.PERTURBATIONS[name](batch, SR, torch.tensor([0.0, 0.8]), generator=torch.Generator().manual_seed(0))
        assert torch.equal(y[0], batch[0]), name
        assert not torch.equal(y[1], batch[1]), name


@pytest.mark.parametrize("severity", [0.2, 0.5, 1.0])
def test_tempo_length_matches_rate_and_keeps_pitch(severity):
    x = harmonic()[None]
    y = P.tempo(x, SR, severity, max_slowdown=0.5)
    rate = 1 - 0.5 * severity
    assert y.shape[1] == round(SR / rate)
    assert f0_of(y[0]) == pytest.approx(200.0, rel=0.01)  # slower, same pitch


@pytest.mark.parametrize("severity", [0.5, 1.0])
def test_speed_length_and_pitch_follow_rate(severity):
    x = harmonic()[None]
    y = P.speed(x, SR, severity, max_slowdown=0.3)
    rate = 1 - 0.3 * severity  # 0.85, 0.7: on the resampler's 1/100 grid
    assert abs(y.shape[1] - SR / rate) <= 1
    assert f0_of(y[0]) == pytest.approx(200.0 * rate, rel=0.01)


@pytest.mark.parametrize("severity,direction", [(0.75, 1.0), (1.0, -1.0), (0.5, 1.0)])
def test_pitch_shift_moves_f0_by_requested_ratio(severity, direction):
    x = harmonic()[None]
    y = P.pitch_shift(x, SR, severity, max_semitones=4.0, direction=direction)
    assert y.shape == x.shape
    want = 200.0 * 2 ** (direction * 4.0 * severity / 12)
    assert f0_of(y[0, 2000:-2000]) == pytest.approx(want, rel=0.01)


def test_tremor_modulates_pitch_around_the_original():
    x = harmonic(seconds=2.0)[None]
    y = P.tremor(x, SR, 1.0, max_pitch_depth=0.03, generator=torch.Generator().manual_seed(0))
    # short windows: F0 swings around 200 Hz by up to ~3%, the mean stays at 200 Hz
    f = torch.tensor([f0_of(y[0, a:a + 1600]) for a in range(0, 2 * SR - 1600, 800)])
    assert f.max() > 203 and f.min() < 197 and float(f.mean()) == pytest.approx(200.0, rel=0.01)


def formant_tone(f0: float = 100.0, formant: float = 1000.0, width: float = 250.0, sr: int = SR) -> torch.Tensor:
    """(T,) 1 s of harmonics of ``f0`` up to 4 kHz with amplitudes of one resonance at ``formant`` Hz."""
    t = torch.arange(sr, dtype=torch.float64) / sr
    x = sum((math.exp(-0.5 * ((k * f0 - formant) / width) ** 2) + 0.01) * torch.sin(2 * math.pi * k * f0 * t)
            for k in range(1, int(4000 / f0)))
    return (0.5 * x / x.abs().max()).float()


def centroid(x: torch.Tensor, lo: float, hi: float, sr: int = SR) -> float:
    """Power-weighted mean frequency in [lo, hi] Hz."""
    p = torch.fft.rfft(x.double()).abs() ** 2
    f = torch.fft.rfftfreq(len(x), 1 / sr)
    band = (f >= lo) & (f <= hi)
    return float((p[band] * f[band]).sum() / p[band].sum())


@pytest.mark.parametrize("alpha", [1.1, 0.9])
def test_vtlp_moves_the_formant_by_alpha_and_keeps_f0(alpha):
    x = formant_tone()[None]
    y = P.vtlp(x, SR, 1.0, alpha=torch.tensor([alpha]))[0, 1000:-1000]
    # the envelope is cepstrally smoothed (~400 Hz resolution), so a 250 Hz-wide formant moves by alpha within 2%
    assert centroid(y, 400, 2000) / centroid(x[0, 1000:-1000], 400, 2000) == pytest.approx(alpha, rel=0.02)
    assert f0_of(y, lo=80, hi=130) == pytest.approx(100.0, rel=0.005)  # the harmonics did not move


def test_pauses_insert_silence_and_keep_the_rest(batch):
    y = P.pauses(batch, SR, 1.0, max_pause_s=0.1, count=2, generator=torch.Generator().manual_seed(0))
    assert y.shape[1] == SR + 2 * 1600
    assert ((y == 0).sum(1) >= 2 * 1600).all()
    # removing the silences gives the input back, sample for sample (the harmonic row has no exact zeros elsewhere)
    row = y[0][y[0] != 0]
    assert torch.equal(row, batch[0][batch[0] != 0])


def test_hypernasality_boosts_250hz_and_cuts_1khz():
    t = torch.arange(SR) / SR
    x = (0.3 * torch.sin(2 * math.pi * 250 * t) + 0.3 * torch.sin(2 * math.pi * 1000 * t))[None]
    y = P.hypernasality(x, SR, 1.0)
    spec_x, spec_y = torch.fft.rfft(x[0]).abs(), torch.fft.rfft(y[0]).abs()
    assert 20 * math.log10(spec_y[250] / spec_x[250]) == pytest.approx(10.0, abs=1.0)
    assert 20 * math.log10(spec_y[1000] / spec_x[1000]) == pytest.approx(-15.0, abs=1.0)


def test_colored_noise_hits_snr():
    x = harmonic()[None].repeat(3, 1)
    y = P.colored_noise(x, 10.0, torch.tensor([0.0, 1.0, 2.0]), SR, generator=torch.Generator().manual_seed(0))
    snr = 10 * torch.log10(x.pow(2).mean(1) / (y - x).pow(2).mean(1))
    assert torch.allclose(snr, torch.full((3,), 10.0), atol=1e-3)


# ------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("name", sorted(P.PERTURBATIONS))
def test_clip_shorter_than_fft_window(name):
    x = harmonic(seconds=0.01)[None]  # 160 samples < the 512-sample window
    y = P.PERTURBATIONS[name](x, SR, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(y).all() and y.shape[1] > 0
    if name not in P.LENGTH_CHANGING:
        assert y.shape == x.shape


@pytest.mark.parametrize("name", sorted(P.PERTURBATIONS))
def test_silent_and_clipped_audio(name):
    silent = torch.zeros(1, 4000)
    clipped = (3 * harmonic(seconds=0.25)).clamp(-1, 1)[None]  # a hard-clipped, square-ish tone
    for x in (silent, clipped):
        y = P.PERTURBATIONS[name](x, SR, 0.7, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(y).all(), name
    assert P.PERTURBATIONS[name](silent, SR, 0.7, generator=torch.Generator().manual_seed(0)).abs().max() < 1e-6


def test_bad_shapes_and_severities_are_clear_errors(batch):
    with pytest.raises(DataError, match=r"mono audio of shape \(B, T\).*to_mono"):
        P.tremor(torch.zeros(2, 2, 100), SR, 0.5)  # stereo batch (B, C, T)
    with pytest.raises(DataError, match="float tensor"):
        P.vtlp(torch.zeros(2, 100, dtype=torch.int16), SR, 0.5)
    with pytest.raises(ConfigError, match=r"severity=1.5 is not allowed; expected values in \[0.0, 1.0\]"):
        P.breathy(batch, SR, 1.5)
    with pytest.raises(ConfigError, match="one severity per batch"):
        P.tempo(batch, SR, torch.tensor([0.1, 0.2]))
    with pytest.raises(ConfigError, match="one per clip"):
        P.hoarse(batch, SR, torch.tensor([0.1, 0.2, 0.3]))
