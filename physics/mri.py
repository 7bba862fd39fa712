"""MRI physics: tissue relaxation, signal equations, multi-coil k-space, undersampling, noise, artifacts, recon.

Frames and units. Images are (B, H, W) or (B, C, H, W) complex/real tensors on a Cartesian grid; H is the
frequency-encode (readout) axis, W the phase-encode axis (one k-space *line* = one column index). Times are in
milliseconds, flip angles in degrees, field strength in tesla, translations in millimetres with the pixel
spacing given in mm. The FFT is centred and orthonormal, so k-space noise and image noise have the same std.
Everything is batched over the leading dimension and runs on the device of its inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from scarce.errors import ConfigError, DataError, check_choice, check_range

TISSUES = ("csf", "gm", "wm", "fat")
SEQUENCES = ("spin_echo", "gradient_echo", "inversion_recovery")
MASK_KINDS = ("random", "equispaced")

# (PD [fraction of water], T1 [ms], T2 [ms], T2* [ms]) per tissue and field strength.
# GM/WM T1 and T2: Stanisz et al., "T1, T2 relaxation and magnetization transfer in tissue at 3T", MRM 54:507 (2005),
#   table 1 (1.5 T and 3 T). CSF T1 (~4.2 s, weakly field dependent): Rooney et al., MRM 57:308 (2007).
# CSF T2 ~2 s at 1.5 T: Spijkerman et al., MAGMA 31:415 (2018) report 1.9-2.5 s; we take 2000 / 1800 ms.
# T2* of GM/WM: Peters et al., "T2* measurements in human brain at 1.5, 3 and 7 T", MRI 25:748 (2007).
# Subcutaneous fat T1/T2: Gold et al., AJR 183:343 (2004) (musculoskeletal tissues at 1.5 T and 3 T).
# Proton density relative to pure water: WM 0.69, GM 0.80, CSF 1.0 (Tofts, "Quantitative MRI of the Brain", ch. 4);
#   fat 0.9 (a convention; fat PD depends on the definition).
RELAXATION: dict[float, dict[str, tuple[float, float, float, float]]] = {
    1.5: {"csf": (1.00, 4200.0, 2000.0, 1500.0), "gm": (0.80, 1197.0, 109.0, 84.0),
          "wm": (0.69, 884.0, 72.0, 66.2), "fat": (0.90, 343.0, 58.0, 40.0)},
    3.0: {"csf": (1.00, 4300.0, 1800.0, 1200.0), "gm": (0.80, 1820.0, 99.0, 66.0),
          "wm": (0.69, 1084.0, 69.0, 53.2), "fat": (0.90, 382.0, 68.0, 30.0)},
}


def relaxation_table(field_t: float, tissues: tuple[str, ...] = TISSUES) -> torch.Tensor:
    """(K, 4) float64 tensor of (PD, T1 ms, T2 ms, T2* ms) for the tissues at 1.5 T or 3 T."""
    check_choice("field_t", field_t, list(RELAXATION))
    table = RELAXATION[float(field_t)]
    for t in tissues:
        check_choice("tissues", t, list(table))
    return torch.tensor([table[t] for t in tissues], dtype=torch.float64)


def parameter_maps(fractions: torch.Tensor, table: torch.Tensor) -> dict[str, torch.Tensor]:
    """Voxel parameter maps from tissue fractions (B, K, ...) and a (K, 4) table: PD, T1, T2, T2* (ms).

    PD mixes linearly; relaxation *rates* (1/T) mix linearly (fast exchange), so T1 = 1 / sum_k f_k / T1_k.
    """
    f = fractions.to(table.dtype).movedim(1, -1)  # (B, ..., K)
    total = f.sum(-1).clamp_min(1e-12)
    pd = f @ table[:, 0]
    out = {"pd": pd}
    for i, name in ((1, "t1"), (2, "t2"), (3, "t2s")):
        out[name] = total / (f @ (1.0 / table[:, i]))
    return out


# ----------------------------------------------------------------------------------------------- signal equations
def spin_echo(pd: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, tr: torch.Tensor, te: torch.Tensor) -> torch.Tensor:
    """Spin echo, TE << TR: S = PD (1 - exp(-TR/T1)) exp(-TE/T2); times in ms, tensors broadcast."""
    return pd * (1 - torch.exp(-tr / t1)) * torch.exp(-te / t2)


def gradient_echo(pd: torch.Tensor, t1: torch.Tensor, t2s: torch.Tensor, tr: torch.Tensor, te: torch.Tensor,
                  flip_deg: torch.Tensor) -> torch.Tensor:
    """Spoiled gradient echo (FLASH) steady state: S = PD sin a (1 - E1) / (1 - cos a E1) exp(-TE/T2*), E1 = e^-TR/T1."""
    a = torch.deg2rad(flip_deg)
    e1 = torch.exp(-tr / t1)
    return pd * torch.sin(a) * (1 - e1) / (1 - torch.cos(a) * e1) * torch.exp(-te / t2s)


def inversion_recovery(pd: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, tr: torch.Tensor, te: torch.Tensor,
                       ti: torch.Tensor) -> torch.Tensor:
    """Magnitude inversion recovery: S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2); ms.

    With TI chosen to null CSF this is FLAIR; with a short TI and TE (T1 weighting) it is an MPRAGE-like contrast
    (one inversion, the readout at TI; the echo-train modulation of a real MPRAGE is not modelled)."""
    return pd * torch.abs(1 - 2 * torch.exp(-ti / t1) + torch.exp(-tr / t1)) * torch.exp(-te / t2)


def null_ti(t1: float, tr: float) -> float:
    """Inversion time (ms) that nulls a tissue of longitudinal relaxation ``t1`` (ms) at repetition ``tr`` (ms)."""
    return t1 * math.log(2 / (1 + math.exp(-tr / t1)))


@dataclass
class MRIProtocol:
    """A batch of acquisition protocols, each field a (B,) tensor.

    sequence: index into SEQUENCES (0 spin echo, 1 spoiled gradient echo, 2 inversion recovery)
    tr_ms, te_ms, ti_ms: repetition, echo and inversion times in ms (ti ignored unless inversion recovery)
    flip_deg: excitation flip angle in degrees (gradient echo only; 90 for the others)
    """

    sequence: torch.Tensor
    tr_ms: torch.Tensor
    te_ms: torch.Tensor
    ti_ms: torch.Tensor
    flip_deg: torch.Tensor

    def __post_init__(self) -> None:
        n = {len(getattr(self, f.name)) for f in fields(self)}
        if len(n) != 1:
            raise ConfigError(f"MRIProtocol: every field must have the same batch length; got lengths {sorted(n)}")
        for name in ("tr_ms", "te_ms", "flip_deg"):
            v = getattr(self, name)
            if not torch.isfinite(v).all() or (v <= 0).any():
                raise ConfigError(f"MRIProtocol.{name} must be finite and > 0; got {v.tolist()}")
        if (self.te_ms >= self.tr_ms).any():
            raise ConfigError("MRIProtocol: te_ms must be < tr_ms for every protocol")
        if ((self.sequence < 0) | (self.sequence >= len(SEQUENCES))).any():
            raise ConfigError(f"MRIProtocol.sequence={self.sequence.tolist()}; expected indices into {SEQUENCES}")

    def __len__(self) -> int:
        return len(self.sequence)

    def to(self, device) -> MRIProtocol:
        """The same protocols with every field on ``device``."""
        return MRIProtocol(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def vector(self) -> torch.Tensor:
        """(B, 7) conditioning vector: one-hot sequence, then TR/TE/TI in seconds and flip angle / 90."""
        onehot = F.one_hot(self.sequence.long(), len(SEQUENCES)).float()
        rest = torch.stack([self.tr_ms / 1000, self.te_ms / 1000, self.ti_ms / 1000, self.flip_deg / 90], 1)
        return torch.cat([onehot, rest.float()], 1)


def signal(protocol: MRIProtocol, pd: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, t2s: torch.Tensor,
           batched: bool = False) -> torch.Tensor:
    """Signal of each protocol. Parameters (PD, T1/T2/T2* in ms) are (...) shared by all protocols, giving
    (B, ...), or, with ``batched``, (B, ...) one map per protocol, giving (B, ...)."""
    shape = (len(protocol),) + (1,) * (pd.dim() - 1 if batched else pd.dim())
    p = {f.name: getattr(protocol, f.name).to(pd.dtype).reshape(shape) for f in fields(protocol) if f.name != "sequence"}
    se = spin_echo(pd, t1, t2, p["tr_ms"], p["te_ms"])
    ge = gradient_echo(pd, t1, t2s, p["tr_ms"], p["te_ms"], p["flip_deg"])
    ir = inversion_recovery(pd, t1, t2, p["tr_ms"], p["te_ms"], p["ti_ms"])
    seq = protocol.sequence.to(pd.device).reshape(shape)
    return torch.where(seq == 0, se, torch.where(seq == 1, ge, ir))


def tissue_image(fractions: torch.Tensor, protocol: MRIProtocol, table: torch.Tensor) -> torch.Tensor:
    """Partial-volume image: each tissue's signal weighted by its fraction. fractions (B, K, H, W) -> (B, H, W).

    Compartments are mixed in *signal* (slow exchange between voxel compartments), which is what makes a GM/WM
    boundary voxel look like the average of the two tissues."""
    s = signal(protocol, table[:, 0], table[:, 1], table[:, 2], table[:, 3])  # (B, K)
    return torch.einsum("bk,bk...->b...", s.to(fractions.dtype), fractions)


# ---------------------------------------------------------------------------------------------------- k-space
def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT over the last two axes (image -> k-space)."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D inverse FFT over the last two axes (k-space -> image)."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def coil_maps(n_coils: int, shape: tuple[int, int], radius: float = 1.5, device=None,
              dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """(C, H, W) complex sensitivities of ``n_coils`` loops on a circle around the FOV, normalised so that
    sum_c |S_c|^2 = 1 at every pixel (then root-sum-of-squares of noise-free coil images returns |image|).

    radius: coil distance from the centre in units of the half field of view; each coil's magnitude falls off as
    1 / (1 + d^2) with its distance d and carries a linear phase around its position (no Biot-Savart modelling)."""
    check_range("n_coils", n_coils, 1, integer=True)
    h, w = shape
    y = torch.linspace(-1, 1, h, device=device)[:, None]
    x = torch.linspace(-1, 1, w, device=device)[None, :]
    maps = []
    for c in range(n_coils):
        ang = 2 * math.pi * c / n_coils
        cy, cx = radius * math.sin(ang), radius * math.cos(ang)
        d2 = (y - cy) ** 2 + (x - cx) ** 2
        mag = 1 / (1 + d2)
        phase = ang + 0.5 * ((y - cy) * math.cos(ang) - (x - cx) * math.sin(ang))
        maps.append(torch.polar(mag, phase))
    s = torch.stack(maps)
    s = s / s.abs().pow(2).sum(0, keepdim=True).sqrt()
    return s.to(dtype)


def cartesian_mask(n_lines: int, acceleration: float, center_fraction: float, kind: str = "random",
                   generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """(n_lines,) bool phase-encode mask keeping ~n_lines / acceleration lines, the centre fully sampled.

    kind "random": the rest drawn uniformly without replacement; "equispaced": every round(R)-th line with a
    random offset. Acceleration 1 keeps every line."""
    check_range("acceleration", acceleration, 1.0)
    check_range("center_fraction", center_fraction, 0.0, 1.0)
    check_choice("mask kind", kind, MASK_KINDS)
    mask = torch.zeros(n_lines, dtype=torch.bool)
    n_center = max(1, round(n_lines * center_fraction)) if center_fraction > 0 else 0
    lo = (n_lines - n_center + 1) // 2
    mask[lo:lo + n_center] = True
    target = max(round(n_lines / acceleration), n_center)
    if acceleration == 1.0:
        mask[:] = True
    elif kind == "random":
        rest = torch.nonzero(~mask).flatten()
        pick = torch.randperm(len(rest), generator=generator)[: max(target - n_center, 0)]
        mask[rest[pick]] = True
    else:
        step = max(int(round(acceleration)), 1)
        offset = int(torch.randint(step, (1,), generator=generator))
        mask[offset::step] = True
    return mask.to(device)


def cpu_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """A CPU generator seeded from ``generator`` (small index draws such as masks are made on the CPU)."""
    if generator is None or generator.device.type == "cpu":
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)


def sigma_for_snr(image: torch.Tensor, snr: torch.Tensor, foreground: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image noise std (per real/imaginary component) giving ``snr`` = mean |image| over the foreground / sigma.

    image (B, ..., H, W); snr (B,); foreground (B, ..., H, W) bool or None (pixels above 10% of the max)."""
    mag = image.abs().flatten(1)
    fg = (mag > 0.1 * mag.amax(1, keepdim=True)) if foreground is None else foreground.flatten(1)
    if (fg.sum(1) == 0).any():
        raise DataError("sigma_for_snr: an image has an empty foreground mask; SNR is undefined")
    mean = (mag * fg).sum(1) / fg.sum(1)
    return mean / snr.to(mean.dtype)


def add_noise(kspace: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Complex Gaussian noise with std ``sigma`` (B,) on each real/imaginary component of k-space (B, ...)."""
    # complex randn has variance 1 in total (1/2 per component), hence the sqrt(2)
    s = (sigma * math.sqrt(2)).reshape((-1,) + (1,) * (kspace.dim() - 1)).to(kspace.real.dtype)
    noise = torch.randn(kspace.shape, generator=generator, device=kspace.device, dtype=kspace.dtype)
    return kspace + noise.mul_(s)


def rss(coil_images: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root-sum-of-squares coil combination: (B, C, H, W) complex -> (B, H, W) real."""
    # squares of the real/imaginary parts accumulated coil by coil into one buffer (addcmul_), then summed over
    # re/im: 4x faster than squaring the whole array and reducing over the coil axis, which was itself half the
    # time of abs() (hypot) and of linalg.vector_norm over (coil, re/im) on CPU (measured on 8 x 256 x 256)
    parts = torch.view_as_real(coil_images).unbind(dim if dim >= 0 else dim - 1)
    acc = parts[0].square()
    for q in parts[1:]:
        acc = acc.addcmul_(q, q)
    return acc.sum(-1).sqrt_()


# -------------------------------------------------------------------------------------------------- artifacts
def bias_field(shape: tuple[int, int], strength: torch.Tensor, generator: torch.Generator | None = None,
               order: int = 2, device=None) -> torch.Tensor:
    """(B, H, W) smooth multiplicative field exp(polynomial of degree ``order`` in x, y); strength (B,) is the std
    of the log-field's coefficients (0 gives a field of ones)."""
    b = len(strength)
    h, w = shape
    y = torch.linspace(-1, 1, h, device=device)[:, None]
    x = torch.linspace(-1, 1, w, device=device)[None, :]
    terms = [x ** i * y ** j for i in range(order + 1) for j in range(order + 1 - i) if i + j > 0]
    basis = torch.stack([t.expand(h, w) for t in terms])  # (T, H, W)
    coef = torch.randn(b, len(terms), generator=generator, device=device) * strength.to(device)[:, None]
    return torch.exp(torch.einsum("bt,thw->bhw", coef, basis))


def gibbs_truncate(kspace: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """Zero k-space outside the central ``keep_fraction`` of both axes: ringing at edges after reconstruction."""
    check_range("keep_fraction", keep_fraction, 0.0, 1.0, low_inclusive=False)
    h, w = kspace.shape[-2:]
    mask = torch.zeros(h, w, dtype=torch.bool, device=kspace.device)
    kh, kw = max(1, round(h * keep_fraction)), max(1, round(w * keep_fraction))
    mask[(h - kh) // 2:(h - kh) // 2 + kh, (w - kw) // 2:(w - kw) // 2 + kw] = True
    return kspace * mask


def ghosting(kspace: torch.Tensor, phase_rad: torch.Tensor) -> torch.Tensor:
    """N/2 ghosting: every other phase-encode line gets a phase error ``phase_rad`` (B,) (e.g. EPI odd/even lines),
    which moves part of the image by half the field of view along W."""
    w = kspace.shape[-1]
    odd = (torch.arange(w, device=kspace.device) % 2).to(kspace.real.dtype)
    ph = phase_rad.to(kspace.device).reshape((-1,) + (1,) * (kspace.dim() - 1)) * odd
    return kspace * torch.polar(torch.ones_like(ph), ph)


def rigid_motion_kspace(image: torch.Tensor, coils: torch.Tensor, rotation_deg: torch.Tensor,
                        shift_mm: torch.Tensor, spacing_mm: float, n_states: int) -> torch.Tensor:
    """Multi-coil k-space (B, C, H, W) of a subject that moves rigidly during the acquisition.

    The phase-encode lines are acquired in ``n_states`` consecutive shots; during shot s the object is rotated by
    rotation_deg[:, s] (degrees, about the image centre) and shifted by shift_mm[:, s, (dy, dx)] (mm). Coils stay
    put. image (B, H, W) complex; rotation_deg (B, S); shift_mm (B, S, 2)."""
    b, h, w = image.shape
    check_range("n_states", n_states, 1, integer=True)
    if rotation_deg.shape != (b, n_states) or shift_mm.shape != (b, n_states, 2):
        raise ConfigError(f"rigid motion: rotation_deg {tuple(rotation_deg.shape)} and shift_mm "
                          f"{tuple(shift_mm.shape)} must be ({b}, {n_states}) and ({b}, {n_states}, 2)")
    out = torch.zeros((b, coils.shape[-3], h, w), dtype=image.dtype, device=image.device)
    edges = torch.linspace(0, w, n_states + 1).round().long().tolist()
    ri = torch.view_as_real(image).permute(0, 3, 1, 2)  # (B, 2, H, W): real and imaginary as channels
    for s in range(n_states):
        th = torch.deg2rad(rotation_deg[:, s]).to(ri.dtype)
        # affine_grid works in normalised coordinates [-1, 1]; a shift of d mm is 2 d / (n * spacing) there
        ty = 2 * shift_mm[:, s, 0].to(ri.dtype) / (h * spacing_mm)
        tx = 2 * shift_mm[:, s, 1].to(ri.dtype) / (w * spacing_mm)
        theta = torch.stack([torch.stack([th.cos(), -th.sin(), -tx], 1), torch.stack([th.sin(), th.cos(), -ty], 1)], 1)
        grid = F.affine_grid(theta, (b, 2, h, w), align_corners=False)
        moved = F.grid_sample(ri, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        moved = torch.complex(moved[:, 0], moved[:, 1])
        k = fft2c(coils * moved[:, None])
        lo, hi = edges[s], edges[s + 1]
        out[..., lo:hi] = k[..., lo:hi]
    return out


# ------------------------------------------------------------------------------------------------- the scanner
class MRIScanner(nn.Module):
    """Simulates 2D MRI slices from tissue-fraction maps, end to end: signal, coils, k-space, artifacts, recon.

    fractions: (N, K, H, W) tissue fractions of N slices (the scene, a buffer); spacing_mm: in-plane pixel size;
    field_t: 1.5 or 3.0 (picks the relaxation table); tissues: the K tissue names (order of the fraction channels);
    n_coils: receive coils (1 = a single uniform coil).
    """

    def __init__(self, fractions: torch.Tensor, spacing_mm: float = 1.0, field_t: float = 3.0,
                 tissues: tuple[str, ...] = TISSUES[:3], n_coils: int = 4):
        super().__init__()
        if fractions.dim() != 4 or fractions.shape[1] != len(tissues):
            raise DataError(f"MRIScanner: fractions must be (N, K={len(tissues)}, H, W) for tissues {tissues}; "
                            f"got {tuple(fractions.shape)}")
        if not torch.isfinite(fractions).all():
            raise DataError("MRIScanner: fractions contain NaN or infinite values")
        check_range("spacing_mm", spacing_mm, 0.0, low_inclusive=False)
        self.spacing_mm, self.field_t, self.tissues = float(spacing_mm), float(field_t), tuple(tissues)
        self.register_buffer("fractions", fractions.float())
        self.register_buffer("table", relaxation_table(field_t, tuple(tissues)).float())
        h, w = fractions.shape[-2:]
        maps = coil_maps(n_coils, (h, w)) if n_coils > 1 else torch.ones(1, h, w, dtype=torch.complex64)
        self.register_buffer("coils", maps)
        # Centred FFT without the shifts (even sizes): fft2c(x) = s c fft2(c x) with the checkerboard
        # c = (-1)^(y + x) and s = (-1)^(H/2 + W/2). c is folded into the coil maps; every k-space operation here is
        # elementwise, so it commutes with the sign pattern, and the magnitude after ifft2 does not see c. Only the
        # returned k-space is multiplied by s c, to be the true centred k-space.
        self.shift_free = h % 2 == 0 and w % 2 == 0
        c = ((torch.arange(h)[:, None] + torch.arange(w)[None]) % 2 * -2 + 1).to(torch.complex64)
        self.register_buffer("coils_modulated", maps * c, persistent=False)
        self.register_buffer("kspace_sign", c * (-1) ** (h // 2 + w // 2), persistent=False)

    def forward(self, index: torch.Tensor, protocol: MRIProtocol, snr: torch.Tensor | None = None,
                acceleration: float = 1.0, center_fraction: float = 0.08, mask_kind: str = "random",
                motion_deg: torch.Tensor | None = None, motion_mm: torch.Tensor | None = None, motion_states: int = 4,
                bias_strength: torch.Tensor | None = None, ghost_rad: torch.Tensor | None = None,
                gibbs_keep: float | None = None, generator: torch.Generator | None = None,
                return_kspace: bool = True) -> dict[str, torch.Tensor]:
        """Simulate slices ``index`` (B,) with ``protocol`` (B entries).

        snr (B,): mean foreground magnitude / noise std per component (None = noise free); acceleration and
        center_fraction: Cartesian undersampling along W; motion_deg (B,) / motion_mm (B,): std of per-shot rotation
        (degrees) and translation (mm); bias_strength (B,); ghost_rad (B,) odd-line phase error; gibbs_keep: central
        k-space fraction kept. Returns {"image": (B, H, W) RSS magnitude, "clean": (B, H, W) noise/artifact-free
        magnitude, "kspace": (B, C, H, W) sampled centred k-space (unless ``return_kspace`` is false), "mask": (W,)
        bool}.
        """
        frac = self.fractions[index.to(self.fractions.device)]  # (B, K, H, W)
        dev = frac.device
        b, _, h, w = frac.shape
        img = tissue_image(frac, protocol.to(dev), self.table)
        if bias_strength is not None:
            img = img * bias_field((h, w), bias_strength.to(dev), generator, device=dev)
        clean = img
        centred = True  # k below is the true centred k-space (else: times the sign pattern s c)
        if motion_deg is not None or motion_mm is not None:
            zeros = torch.zeros(b, device=dev)
            rd = (motion_deg if motion_deg is not None else zeros).to(dev)
            sm = (motion_mm if motion_mm is not None else zeros).to(dev)
            rot = torch.randn(b, motion_states, generator=generator, device=dev) * rd[:, None]
            shift = torch.randn(b, motion_states, 2, generator=generator, device=dev) * sm[:, None, None]
            k = rigid_motion_kspace(img.to(torch.complex64), self.coils, rot, shift, self.spacing_mm, motion_states)
        elif self.shift_free and ghost_rad is None and gibbs_keep is None:
            mask = cartesian_mask(w, acceleration, center_fraction, mask_kind, cpu_generator(generator), device=dev)
            sigma = None if snr is None else sigma_for_snr(clean, snr.to(dev)) * math.sqrt(2)
            image, k = self.acquire(img, mask, sigma, generator, return_kspace)
            return {"image": image, "clean": clean, "kspace": k, "mask": mask}
        elif self.shift_free:
            k = torch.fft.fft2(self.coils_modulated * img[:, None], norm="ortho")  # (B, C, H, W)
            centred = False
        else:
            k = fft2c(self.coils * img[:, None].to(torch.complex64))
        if ghost_rad is not None:
            k = ghosting(k, ghost_rad.to(dev))
        if gibbs_keep is not None:
            k = gibbs_truncate(k, gibbs_keep)
        mask = cartesian_mask(w, acceleration, center_fraction, mask_kind, cpu_generator(generator), device=dev)
        k = k.index_fill_(-1, torch.nonzero(~mask).flatten(), 0)
        if snr is not None:
            # per-coil sigma = mean / snr: with sum_c |S_c|^2 = 1 the matched-filter combination sum_c conj(S_c) x_c
            # has exactly this noise std, so the requested SNR is that of the coil-combined image. Noise is drawn
            # only on the acquired lines (drawing Gaussians costs more than the FFTs on a CPU).
            cols = torch.nonzero(mask).flatten()
            noise = torch.randn((*k.shape[:-1], len(cols)), dtype=k.dtype, device=dev, generator=generator)
            sigma = sigma_for_snr(clean, snr.to(dev)) * math.sqrt(2)  # complex randn: variance 1/2 per component
            k = k.index_add_(-1, cols, noise.mul_(sigma.view(-1, 1, 1, 1).to(noise.real.dtype)))
        image = rss(ifft2c(k) if centred else torch.fft.ifft2(k, norm="ortho"))
        if return_kspace and not centred:
            k = k * self.kspace_sign
        return {"image": image, "clean": clean, "kspace": k if return_kspace else None, "mask": mask}

    def acquire(self, img: torch.Tensor, mask: torch.Tensor, sigma: torch.Tensor | None,
                generator: torch.Generator | None = None, return_kspace: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Coil images -> undersampled noisy k-space -> RSS image, doing only the transforms that are needed.

        img (B, H, W) real image (even H, W); mask (W,) acquired phase-encode lines; sigma (B,) std of the complex
        noise (sqrt 2 x the per-component std, as for complex randn) or None. Returns the (B, H, W) RSS image and,
        with ``return_kspace``, the (B, C, H, W) centred k-space (zero on the lines not acquired).

        Computes ifft2(mask * fft2(S c x) + noise) (c: the sign pattern of __init__). Without returned k-space it
        is pruned: fft2 = fft along H of fft along W, the mask zeroes whole columns and ifft_H(fft_H(Y) + N) =
        Y + ifft_H(N), so only the W-transforms of the whole array and the H-transform of the noise on the acquired
        columns remain. The noise is drawn as in the unpruned path (same generator stream and layout), so both give
        the same images. On the CPU the batch goes slice by slice: each slice's arrays stay in cache and the
        allocator reuses them instead of page-faulting fresh batch-sized buffers (2x faster on 8 x 8 x 256 x 256).
        """
        b, h, w = img.shape
        c = self.coils.shape[0]
        cols = torch.nonzero(mask).flatten()
        uncols = torch.nonzero(~mask).flatten()
        image = img.new_empty(b, h, w)
        k = torch.empty((b, c, h, w), dtype=torch.complex64, device=img.device) if return_kspace else None
        step = 1 if img.device.type == "cpu" else b
        for s in range(0, b, step):
            e = min(s + step, b)
            x = self.coils_modulated * img[s:e, None]  # (n, C, H, W)
            noise = None
            if sigma is not None:
                # complex Gaussian noise on the acquired lines only (per-coil sigma: see forward); slice after
                # slice, the generator stream is that of one (B, C, H, W_acquired) draw
                noise = torch.randn((e - s, c, h, len(cols)), dtype=torch.complex64, device=img.device,
                                    generator=generator).mul_(sigma[s:e].to(torch.float32).view(-1, 1, 1, 1))
            if return_kspace:  # the full k-space is needed anyway: pruning the H-transforms measured slower here
                ks = torch.fft.fft2(x, norm="ortho").index_fill_(-1, uncols, 0)
                if noise is not None:
                    ks.index_add_(-1, cols, noise)
                torch.mul(ks, self.kspace_sign, out=k[s:e])
                image[s:e] = rss(torch.fft.ifft2(ks, norm="ortho"))
                continue
            y = torch.fft.fft(x, dim=-1, norm="ortho")
            if noise is not None:
                y.index_add_(-1, cols, torch.fft.ifft(noise, dim=-2, norm="ortho"))
            image[s:e] = rss(torch.fft.ifft(y.index_fill_(-1, uncols, 0), dim=-1, norm="ortho"))
        return image, k
