"""Perturbations that model atypical speech, on batches of mono waveforms (B, T) float in [-1, 1], CPU or GPU.

Every perturbation takes ``severity`` in [0, 1]; 0 returns the input exactly. Length-preserving ones also take a
(B,) tensor of severities (one per clip). ``tempo``, ``speed``, ``prolong`` and ``pauses`` change the length.
Randomness comes only from the ``generator`` passed in (per-rank seeding under DDP is the caller's).

What each models (dysarthria features after Darley, Aronson & Brown 1969; Kent 2000):
- tempo / speed: slow speaking rate (tempo keeps pitch: phase vocoder; speed is resampling, pitch moves too);
- pitch_shift: habitual pitch too high or low; tremor: 4-7 Hz pitch and loudness oscillation;
- vtlp: vocal-tract-length perturbation, a piecewise-linear frequency warp (Jaitly & Hinton 2013);
- breathy / hoarse: aspiration noise shaped like the voice's own spectrum, jitter (period noise) and shimmer;
- imprecise_consonants: obstruent cues smeared in time and attenuated above ``cutoff_hz``;
- prolong / pauses: prolonged phonemes and inserted silences;
- hypernasality: a nasal resonance near 250 Hz and an anti-resonance near 1 kHz (Fant 1960; Kent 2000).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from scarce.errors import ConfigError, DataError

Severity = float | torch.Tensor
N_FFT, HOP = 512, 128  # 32 ms / 8 ms at 16 kHz: the STFT every spectral perturbation shares


# ------------------------------------------------------------------------------------------------ checks
def check_batch(x: torch.Tensor, key: str = "audio") -> torch.Tensor:
    """Accept (T,) or (B, T) float audio; anything else is a clear error (stereo must be mixed down first)."""
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise DataError(f"{key}: expected a float tensor of shape (B, T); got {type(x).__name__} "
                        f"{getattr(x, 'dtype', '')}")
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise DataError(f"{key}: expected mono audio of shape (B, T); got shape {tuple(x.shape)} (mix stereo down "
                        "with speech.audio.to_mono first)")
    if x.shape[1] == 0:
        raise DataError(f"{key}: the clips hold no samples")
    return x


def severities(severity: Severity, batch: int, device: torch.device, key: str = "severity") -> torch.Tensor:
    """A float or (B,) tensor in [0, 1] -> (B,) float tensor on ``device``."""
    s = torch.as_tensor(severity, dtype=torch.float32, device=device)
    shown = s.item() if s.ndim == 0 else (s.tolist() if s.numel() < 8 else f"<{s.numel()} values>")
    if s.ndim == 0:
        s = s.expand(batch)
    if s.shape != (batch,):
        raise ConfigError(f"{key}: expected a number or {batch} values (one per clip); got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all() or s.min() < 0 or s.max() > 1:
        raise ConfigError(f"{key}={shown} is not allowed; expected values in [0.0, 1.0]")
    return s


def scalar_severity(severity: Severity, key: str = "severity") -> float:
    """Length-changing perturbations take one severity per batch (clips of one batch keep one length)."""
    s = torch.as_tensor(severity, dtype=torch.float64)
    if s.ndim != 0:
        raise ConfigError(f"{key}: length-changing perturbations take one severity per batch; got shape "
                          f"{tuple(s.shape)}")
    return float(severities(float(s), 1, torch.device("cpu"), key)[0])


def _keep_zero(x: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Rows with severity 0 are returned exactly as they came in."""
    return torch.where((s == 0)[:, None], x, y)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
          normal: bool = False) -> torch.Tensor:
    fn = torch.randn if normal else torch.rand
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return fn(shape, generator=generator, device=gen_device).to(device)


# ------------------------------------------------------------------------------------------ STFT helpers
def stft(x: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """(B, T) -> (B, n_fft/2+1, frames) complex; zero padding at the edges, so clips shorter than the window work."""
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    return torch.stft(x, n_fft, hop, window=window, center=True, pad_mode="constant", return_complex=True)


def istft(spec: torch.Tensor, length: int, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """(B, F, frames) complex -> (B, length)."""
    window = torch.hann_window(n_fft, device=spec.device)
    return torch.istft(spec, n_fft, hop, window=window, center=True, length=length)


def bin_freqs(sample_rate: int, n_fft: int, device: torch.device) -> torch.Tensor:
    """(F,) centre frequency of each rFFT bin, Hz."""
    return torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, device=device)


def _spectral(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], n_fft: int = N_FFT,
              hop: int = HOP) -> torch.Tensor:
    """Apply ``fn`` to the complex STFT and come back to a waveform of the same length."""
    return istft(fn(stft(x, n_fft, hop)), x.shape[1], n_fft, hop)


def _delay(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """y[t] = x[t - d[t]] with linear interpolation; d (B, T) in samples (a variable delay line)."""
    t = torch.arange(x.shape[1], device=x.device, dtype=x.dtype)[None] - d
    t = t.clamp(0, x.shape[1] - 1)
    i0 = t.floor().long()
    i1 = (i0 + 1).clamp(max=x.shape[1] - 1)
    w = t - i0
    return torch.gather(x, 1, i0) * (1 - w) + torch.gather(x, 1, i1) * w


def _lowpass_noise(shape: tuple[int, int], cutoff_hz: float, sample_rate: int, generator: torch.Generator | None,
                   device: torch.device) -> torch.Tensor:
    """(B, T) Gaussian noise low-passed at ``cutoff_hz`` (brick-wall in the rFFT domain), unit RMS per row."""
    n = _rand(shape, generator, device, normal=True)
    spec = torch.fft.rfft(n, dim=1)
    f = torch.fft.rfftfreq(shape[1], 1 / sample_rate).to(device)
    spec = spec * (f <= cutoff_hz)
    out = torch.fft.irfft(spec, n=shape[1], dim=1)
    return out / out.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-8)


# --------------------------------------------------------------------------------------- rate and pitch
def _ratio(rate: float, denominator: int = 100) -> tuple[int, int]:
    """A rate as a small integer fraction (orig, new) for the polyphase resampler."""
    num = max(1, round(rate * denominator))
    g = math.gcd(num, denominator)
    return num // g, denominator // g


def resample_rate(x: torch.Tensor, rate: float) -> torch.Tensor:
    """Play (B, T) ``rate`` times faster by resampling: length T / rate, every frequency times ``rate``."""
    import torchaudio.functional as AF

    orig, new = _ratio(rate)
    if orig == new:
        return x.clone()
    # T samples taken as rate `orig` become T * new / orig = T / rate samples; played back at the old rate
    return AF.resample(x, orig, new)


def time_stretch(x: torch.Tensor, rate: float, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """(B, T) -> (B, round(T / rate)): phase-vocoder time stretch, pitch unchanged (rate > 1 is faster)."""
    import torchaudio.functional as AF

    if rate == 1:
        return x.clone()
    spec = stft(x, n_fft, hop)
    advance = torch.linspace(0, math.pi * hop, spec.shape[1], device=x.device)[:, None]
    stretched = AF.phase_vocoder(spec, rate, advance)
    return istft(stretched, round(x.shape[1] / rate), n_fft, hop)


def tempo(x: torch.Tensor, sample_rate: int, severity: Severity, max_slowdown: float = 0.5,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Slower speech at the same pitch: rate = 1 - max_slowdown * severity, length T / rate."""
    s = scalar_severity(severity)
    x = check_batch(x)
    if s == 0:
        return x.clone()
    return time_stretch(x, 1 - max_slowdown * s)


def speed(x: torch.Tensor, sample_rate: int, severity: Severity, max_slowdown: float = 0.3,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Slower and lower (Ko et al. 2015's speed perturbation): rate = 1 - max_slowdown * severity, length T / rate
    (to the resampler's 1/100 grid)."""
    s = scalar_severity(severity)
    x = check_batch(x)
    if s == 0:
        return x.clone()
    return resample_rate(x, 1 - max_slowdown * s)


def pitch_shift(x: torch.Tensor, sample_rate: int, severity: Severity, max_semitones: float = 4.0,
                direction: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Every frequency times 2 ** (direction * max_semitones * severity / 12), length and timing kept.

    Time-stretch by the ratio (phase vocoder), then resample back to T samples. direction: +1 up, -1 down.
    ``severity`` may be (B,): clips that share a severity are shifted together."""
    x = check_batch(x)
    s = severities(severity, len(x), x.device)
    out = x.clone()
    for value in torch.unique(s[s > 0]).tolist():
        rows = torch.nonzero(s == value).flatten()
        out[rows] = _shift(x[rows], 2 ** (direction * max_semitones * value / 12))
    return out


def _shift(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B, T) with every frequency times ``ratio`` (to the resampler's 1/100 grid), length kept."""
    orig, new = _ratio(ratio)
    if orig == new:
        return x.clone()
    ratio = orig / new  # the resampler's grid; the stretch uses the same ratio so the length comes back exact
    stretched = time_stretch(x, 1 / ratio)  # ratio times longer
    return _fit(resample_rate(stretched, ratio), x.shape[1])


def _fit(y: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad the last axis to ``length`` (rounding of the two stages leaves a sample or two)."""
    if y.shape[1] >= length:
        return y[:, :length]
    return F.pad(y, (0, length - y.shape[1]))


def tremor(x: torch.Tensor, sample_rate: int, severity: Severity, rate_hz: tuple[float, float] = (4.0, 7.0),
           max_pitch_depth: float = 0.03, max_amp_depth: float = 0.5,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Pitch and loudness oscillating at 4-7 Hz: instantaneous frequency x (1 +- max_pitch_depth * severity)
    through a sinusoidal delay line, amplitude x (1 +- max_amp_depth * severity)."""
    x = check_batch(x)
    s = severities(severity, len(x), x.device)
    if not s.any():
        return x.clone()
    b, n = x.shape
    f = rate_hz[0] + (rate_hz[1] - rate_hz[0]) * _rand((b, 1), generator, x.device)
    phase = 2 * math.pi * _rand((b, 1), generator, x.device)
    t = torch.arange(n, device=x.device, dtype=x.dtype)[None] / sample_rate
    arg = 2 * math.pi * f * t + phase
    # d(t) = D (1 + sin): the frequency ratio is 1 - dD/dt / sr = 1 - D 2 pi f cos / sr
    depth = (max_pitch_depth * s)[:, None] * sample_rate / (2 * math.pi * f)
    y = _delay(x, depth * (1 + torch.sin(arg)))
    y = y * (1 + (max_amp_depth * s)[:, None] * torch.sin(arg + math.pi / 2)) / (1 + max_amp_depth * s[:, None])
    return _keep_zero(x, y, s)


def vtlp(x: torch.Tensor, sample_rate: int, severity: Severity, max_warp: float = 0.2, boundary_hz: float = 4800.0,
         generator: torch.Generator | None = None, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """Vocal-tract-length perturbation: formants move by a factor alpha = 1 +- max_warp * severity (random sign
    per clip unless ``alpha`` (B,) is given); piecewise-linear warp that keeps 0 Hz and Nyquist fixed, applied to
    the cepstrally smoothed spectral envelope only, so F0 and its harmonics stay put (formants narrower than the
    envelope's ~400 Hz resolution move by less than alpha)."""
    x = check_batch(x)
    s = severities(severity, len(x), x.device)
    if not s.any():
        return x.clone()
    if alpha is None:
        sign = torch.where(_rand((len(x),), generator, x.device) < 0.5, -1.0, 1.0)
        alpha = 1 + sign * max_warp * s
    alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device).reshape(-1)[:, None]  # (B, 1)
    nyq = sample_rate / 2
    f = bin_freqs(sample_rate, N_FFT, x.device)[None]  # (1, F)
    knee = boundary_hz * torch.minimum(alpha, torch.ones_like(alpha)) / alpha  # input frequency of the knee
    # warped(f) = alpha f below the knee, then a straight line to (nyq, nyq); we need its inverse to read from
    out_knee = alpha * knee
    src = torch.where(f <= out_knee, f / alpha, knee + (f - out_knee) * (nyq - knee) / (nyq - out_knee))
    pos = (src / nyq * (N_FFT // 2)).clamp(0, N_FFT // 2)  # fractional source bin per output bin (B, F)

    def warp(spec: torch.Tensor) -> torch.Tensor:
        # move the spectral envelope only: the harmonics (pitch) stay, the formants on them move by alpha
        log_env = spectral_envelope(spec, sample_rate)  # (B, F, frames)
        i0 = pos.floor().long()
        w = (pos - i0)[..., None]
        i1 = (i0 + 1).clamp(max=log_env.shape[1] - 1)
        idx0 = i0[..., None].expand(-1, -1, log_env.shape[2])
        idx1 = i1[..., None].expand(-1, -1, log_env.shape[2])
        warped = torch.gather(log_env, 1, idx0) * (1 - w) + torch.gather(log_env, 1, idx1) * w
        return spec * (warped - log_env).clamp(-MAX_GAIN_NATS, MAX_GAIN_NATS).exp()

    return _keep_zero(x, _spectral(x, warp), s)


MAX_GAIN_NATS = math.log(10.0)  # envelope warps change no bin by more than 20 dB (deep valleys hold only noise)


def spectral_envelope(spec: torch.Tensor, sample_rate: int, max_f0_hz: float = 300.0) -> torch.Tensor:
    """(B, F, frames) complex STFT -> (B, F, frames) log-magnitude envelope by cepstral smoothing: quefrencies
    below the shortest pitch period (1 / ``max_f0_hz``) kept with a half-Hann taper, the harmonics above dropped."""
    n_fft = 2 * (spec.shape[1] - 1)
    log_mag = spec.abs().clamp_min(1e-7).log()
    cep = torch.fft.irfft(log_mag, n=n_fft, dim=1)  # (B, n_fft, frames), real and even
    cut = max(2, int(sample_rate / max_f0_hz * 0.8))
    q = torch.arange(n_fft, device=spec.device)
    q = torch.minimum(q, n_fft - q).float()  # distance from quefrency 0 (the cepstrum is symmetric)
    lifter = torch.where(q < cut, 0.5 + 0.5 * torch.cos(math.pi * q / cut), torch.zeros(()))
    return torch.fft.rfft(cep * lifter[None, :, None], dim=1).real


# ------------------------------------------------------------------------------------------ voice quality
def shaped_noise(x: torch.Tensor, generator: torch.Generator | None, highpass_hz: float = 0.0,
                 sample_rate: int = 16000) -> torch.Tensor:
    """Noise whose short-time spectrum follows the clip's own (smoothed) magnitude, unit RMS relative to x."""
    spec = stft(x)
    mag = spec.abs()
    # smooth over ~5 bins and 3 frames: the envelope, not the harmonics (aspiration noise has no harmonics)
    env = F.avg_pool2d(mag[:, None], (5, 3), stride=1, padding=(2, 1), count_include_pad=False)[:, 0]
    if highpass_hz > 0:
        env = env * (bin_freqs(sample_rate, N_FFT, x.device) >= highpass_hz)[None, :, None]
    phase = 2 * math.pi * _rand(tuple(mag.shape), generator, x.device)
    return istft(torch.polar(env, phase), x.shape[1])


def _jitter_shimmer(x: torch.Tensor, sample_rate: int, s: torch.Tensor, jitter: float, shimmer: float,
                    generator: torch.Generator | None) -> torch.Tensor:
    """Period noise (random delay modulation, band-limited to 80 Hz) and amplitude noise (band-limited to 150 Hz)."""
    b, n = x.shape
    # a delay of D samples wandering at ~80 Hz changes the local period by about D * 2 pi 80 / sr
    d = (jitter * s)[:, None] * sample_rate / (2 * math.pi * 80) * _lowpass_noise((b, n), 80, sample_rate,
                                                                                  generator, x.device)
    y = _delay(x, d - d.min(1, keepdim=True).values)
    amp = 1 + (shimmer * s)[:, None] * _lowpass_noise((b, n), 150, sample_rate, generator, x.device)
    return y * amp.clamp_min(0)


def _add_at_snr(x: torch.Tensor, noise: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
    """x + noise scaled to ``snr_db`` (B,) relative to x's RMS."""
    px = x.pow(2).mean(1, keepdim=True)
    pn = noise.pow(2).mean(1, keepdim=True).clamp_min(1e-12)
    return x + noise * (px / pn * 10 ** (-snr_db[:, None] / 10)).sqrt()


def breathy(x: torch.Tensor, sample_rate: int, severity: Severity, min_snr_db: float = 5.0,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Breathy voice: aspiration noise (the voice's envelope above 1 kHz) down to ``min_snr_db`` at severity 1,
    harmonics softened by a gentle low-pass tilt, light jitter/shimmer."""
    x = check_batch(x)
    s = severities(severity, len(x), x.device)
    if not s.any():
        return x.clone()
    f = bin_freqs(sample_rate, N_FFT, x.device)[None, :, None]
    tilt = 1 / (1 + (s[:, None, None] * f / 2000) ** 2).sqrt()  # up to -6 dB/oct above 2 kHz: a weaker glottal pulse
    voiced = _spectral(x, lambda sp: sp * tilt)
    voiced = _jitter_shimmer(voiced, sample_rate, s, 0.01, 0.1, generator)
    noise = shaped_noise(x, generator, highpass_hz=1000, sample_rate=sample_rate)
    snr = 40 - (40 - min_snr_db) * s
    return _keep_zero(x, _add_at_snr(voiced, noise, snr), s)


def hoarse(x: torch.Tensor, sample_rate: int, severity: Severity, max_jitter: float = 0.03,
           max_shimmer: float = 0.4, min_snr_db: float = 10.0, generator: torch.Generator | None = None
           ) -> torch.Tensor:
    """Hoarse/rough voice: strong jitter (period noise up to ``max_jitter``), shimmer (amplitude noise up to
    ``max_shimmer``) and broadband noise shaped like the voice."""
    x = check_batch(x)
    s = severities(severity, len(x), x.device)
    if not s.any():
        return x.clone()
    y = _jitter_shimmer(x, sample_rate, s, max_jitter, max_shimmer, generator)
    noise = shaped_noise(x, generator)
    return _keep_zero(x, _add_at_snr(y, noise, 40 - (40 - min_snr_db) * s), s)


# --------------------------------------------------------------------------------------------- articulation
def imprecise_consonants(x: torch.Tensor, sample_rate: int, severity: Severity, cutoff_hz: float = 2000.0,
                         max_atten_db: float = 15.0, max_smear_ms: float = 60.0,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Weak, smeared obstruents: above ``cutoff_hz`` the magnitude is averaged over up to ``max_smear_ms`` (bursts
    and frication lose their sharp onsets) and attenuated by up to ``max_atten_db``; phase is kept."""
    x = check_batch(x)
    s = severities(severity, len(x), x.device)
    if not s.any():
        return x.clone()
    frames = max(1, round(max_smear_ms / 1000 * sample_rate / HOP))
    high = (bin_freqs(sample_rate, N_FFT, x.device) >= cutoff_hz)[None, :, None]

    def blur(spec: torch.Tensor) -> torch.Tensor:
        mag, ph = spec.abs(), spec.angle()
        k = 2 * frames + 1
        smeared = F.avg_pool1d(mag.flatten(0, 1)[:, None], k, stride=1, padding=frames,
                               count_include_pad=False)[:, 0].reshape(mag.shape)
        mix = s[:, None, None]
        gain = 10 ** (-max_atten_db * mix / 20)
        new = torch.where(high, gain * ((1 - mix) * mag + mix * smeared), mag)
        return torch.polar(new, ph)

    return _keep_zero(x, _spectral(x, blur), s)


def hypernasality(x: torch.Tensor, sample_rate: int, severity: Severity, pole_hz: float = 250.0,
                  zero_hz: float = 1000.0, max_pole_db: float = 10.0, max_zero_db: float = 15.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Nasal coupling: a resonance near ``pole_hz`` boosted and an anti-resonance near ``zero_hz`` cut, both
    growing with severity; zero-phase filtering in the STFT domain."""
    x = check_batch(x)
    s = severities(severity, len(x), x.device)
    if not s.any():
        return x.clone()
    f = bin_freqs(sample_rate, N_FFT, x.device)[None, :, None]
    m = s[:, None, None]
    peak = torch.exp(-0.5 * ((f - pole_hz) / 80) ** 2)
    notch = torch.exp(-0.5 * ((f - zero_hz) / 150) ** 2)
    gain_db = m * (max_pole_db * peak - max_zero_db * notch)
    return _keep_zero(x, _spectral(x, lambda sp: sp * 10 ** (gain_db / 20)), s)


def prolong(x: torch.Tensor, sample_rate: int, severity: Severity, max_factor: float = 2.5,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Prolongation: the (segment) audio stretched by 1 + (max_factor - 1) * severity at the same pitch."""
    s = scalar_severity(severity)
    x = check_batch(x)
    if s == 0:
        return x.clone()
    return time_stretch(x, 1 / (1 + (max_factor - 1) * s))


def pauses(x: torch.Tensor, sample_rate: int, severity: Severity, max_pause_s: float = 0.3, count: int = 1,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` silences of severity * ``max_pause_s`` each, inserted at random points of each clip (global mode)
    or, through targeting, before each target segment. Length T + count * pause."""
    s = scalar_severity(severity)
    x = check_batch(x)
    if s == 0:
        return x.clone()
    gap = round(s * max_pause_s * sample_rate)
    b, n = x.shape
    cuts = (_rand((b, count), generator, x.device) * n).long().sort(1).values  # (B, count)
    # output sample j reads input sample j - (gaps before it); positions inside a gap read silence
    out_len = n + count * gap
    j = torch.arange(out_len, device=x.device)[None]
    starts = cuts + gap * torch.arange(count, device=x.device)[None]  # where each gap starts in the output
    before = (j[:, :, None] >= (starts + gap)[:, None, :]).sum(2)  # complete gaps before j
    inside = ((j[:, :, None] >= starts[:, None, :]) & (j[:, :, None] < (starts + gap)[:, None, :])).any(2)
    src = (j - before * gap).clamp(0, n - 1)
    return torch.where(inside, torch.zeros((), device=x.device), torch.gather(x, 1, src))


# ------------------------------------------------------------------------------------------ generic pieces
def gain(x: torch.Tensor, db: torch.Tensor | float) -> torch.Tensor:
    """x * 10^(db/20); db a number or (B,)."""
    d = torch.as_tensor(db, dtype=x.dtype, device=x.device).reshape(-1, 1)
    return x * 10 ** (d / 20)


def colored_noise(x: torch.Tensor, snr_db: torch.Tensor | float, f_decay: torch.Tensor | float,
                  sample_rate: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """x plus noise with power spectral density ~ 1 / f^f_decay (0 white, 1 pink, 2 brown) at ``snr_db``."""
    b, n = x.shape
    white = torch.fft.rfft(_rand((b, n), generator, x.device, normal=True), dim=1)
    f = torch.fft.rfftfreq(n, 1 / sample_rate).to(x.device).clamp_min(1.0)[None]
    decay = torch.as_tensor(f_decay, dtype=x.dtype, device=x.device).reshape(-1, 1)
    noise = torch.fft.irfft(white / f ** (decay / 2), n=n, dim=1)
    snr = torch.as_tensor(snr_db, dtype=x.dtype, device=x.device).reshape(-1).expand(b)
    return _add_at_snr(x, noise, snr)


Perturbation = Callable[..., torch.Tensor]
PERTURBATIONS: dict[str, Perturbation] = {
    "tempo": tempo, "speed": speed, "pitch_shift": pitch_shift, "tremor": tremor, "vtlp": vtlp,
    "breathy": breathy, "hoarse": hoarse, "imprecise_consonants": imprecise_consonants,
    "hypernasality": hypernasality, "prolong": prolong, "pauses": pauses,
}
LENGTH_CHANGING = frozenset({"tempo", "speed", "prolong", "pauses"})
