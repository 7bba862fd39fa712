"""X-ray physics: cone-beam digitally reconstructed radiographs (DRRs) by ray marching, with energy dependence.

World frame (pinned by tests): millimetres, origin at the centre of the volume, axes along the volume's array axes
(i, j, k) = (x, y, z); a volume is (X, Y, Z) with spacing (sx, sy, sz) mm and voxel i's centre at
(i - (X - 1) / 2) * sx. At the identity pose the source sits at (0, -sod, 0), the detector plane is y = sdd - sod,
detector columns run along +x and rows along -z (row 0 is the top, +z). A :class:`Pose` rotates and then shifts
the source-detector pair: p' = R p + t, with R = Rz(rz) Ry(ry) Rx(rx) (radians) and t in mm.

Attenuation: HU -> a water-equivalent part and a cortical-bone part (two-material decomposition); the line
integrals of both (mm) are combined with mass attenuation coefficients of water and bone at each energy bin of a
polychromatic spectrum (weights over bins), then Beer-Lambert, scatter, detector blur, Poisson quantum noise and the
log transform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scarce.errors import ConfigError, DataError, check_choice, check_range

# Mass attenuation coefficients mu/rho (cm^2/g), total with coherent scattering: J. H. Hubbell and S. M. Seltzer,
# "Tables of X-Ray Mass Attenuation Coefficients ... (NISTIR 5632)", NIST (1995/2004): water (liquid), bone
# (cortical, ICRU-44, density 1.92 g/cm^3) and aluminium (2.699 g/cm^3, for the tube's filtration).
ENERGY_KEV = np.array([15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0])
MU_RHO = {
    "water": np.array([1.673, 0.8096, 0.3756, 0.2683, 0.2269, 0.2059, 0.1837, 0.1707, 0.1505]),
    "bone": np.array([9.032, 4.001, 1.331, 0.6655, 0.4242, 0.3148, 0.2229, 0.1855, 0.1480]),
    "aluminium": np.array([7.955, 3.441, 1.128, 0.5685, 0.3681, 0.2778, 0.2018, 0.1704, 0.1378]),
}
DENSITY = {"water": 1.0, "bone": 1.92, "aluminium": 2.699}  # g/cm^3
CT_EFFECTIVE_KEV = 70.0  # effective energy at which CT numbers are taken to be calibrated (a 120 kVp scanner)


def linear_mu(material: str, energy_kev: torch.Tensor) -> torch.Tensor:
    """Linear attenuation (1/mm) of a material at energies (keV), log-log interpolated in the NIST table."""
    if material not in MU_RHO:
        raise ConfigError(f"material={material!r} is not allowed; expected one of {sorted(MU_RHO)}")
    e = energy_kev.double().clamp(ENERGY_KEV[0], ENERGY_KEV[-1])
    le, lm = torch.log(torch.tensor(ENERGY_KEV, dtype=torch.float64)), torch.log(torch.tensor(MU_RHO[material]))
    x = torch.log(e)
    i = torch.searchsorted(le.to(e.device), x).clamp(1, len(le) - 1)
    le, lm = le.to(e.device), lm.to(e.device)
    w = (x - le[i - 1]) / (le[i] - le[i - 1])
    mu_rho = torch.exp(lm[i - 1] + w * (lm[i] - lm[i - 1]))
    return mu_rho * DENSITY[material] / 10.0  # cm^2/g * g/cm^3 = 1/cm -> 1/mm


def bone_hu() -> float:
    """CT number of pure cortical bone at the calibration energy: 1000 (mu_bone / mu_water - 1)."""
    e = torch.tensor([CT_EFFECTIVE_KEV])
    return float(1000 * (linear_mu("bone", e) / linear_mu("water", e) - 1))


def decompose_hu(hu: torch.Tensor) -> torch.Tensor:
    """HU (...) -> (2, ...) volume fractions of (water-equivalent, cortical bone).

    HU <= 0 is water diluted by air (fraction 1 + HU/1000, so air is 0); HU > 0 is a water/bone mixture with bone
    fraction HU / HU_bone (clipped to 1), which reproduces the CT number at the calibration energy."""
    hu = hu.float()
    hb = bone_hu()
    bone = (hu / hb).clamp(0, 1)
    water = torch.where(hu <= 0, (1 + hu / 1000).clamp_min(0), 1 - bone)
    return torch.stack([water, bone])


def kramers_spectrum(kvp: torch.Tensor, energies_kev: torch.Tensor, filtration_mm_al: float = 2.5) -> torch.Tensor:
    """(B, E) photon-number weights (summing to 1) of a tungsten tube at peak voltages kvp (B,) kV over energy
    bins (E,) keV: Kramers' bremsstrahlung N(E) ~ (kVp - E) / E, hardened by ``filtration_mm_al`` of aluminium.
    Characteristic lines are not modelled."""
    e = energies_kev.double()[None]
    kv = kvp.double()[:, None].to(e.device)
    n = ((kv - e) / e).clamp_min(0)
    n = n * torch.exp(-linear_mu("aluminium", e) * filtration_mm_al)
    total = n.sum(1, keepdim=True)
    if (total <= 0).any():
        raise ConfigError(f"kvp={kvp.tolist()}: every peak voltage must exceed the lowest energy bin "
                          f"({float(energies_kev.min())} keV)")
    return n / total


def monochromatic(energy_kev: float, energies_kev: torch.Tensor, batch: int) -> torch.Tensor:
    """(B, E) weights putting every photon in the bin nearest ``energy_kev``."""
    i = int(torch.argmin((energies_kev - energy_kev).abs()))
    return F.one_hot(torch.full((batch,), i), len(energies_kev)).double()


# ---------------------------------------------------------------------------------------------------- geometry
@dataclass
class Pose:
    """Rigid pose of the source-detector pair in the world frame, batched.

    rotation: (B, 3) radians about world x, y, z, applied in that order (R = Rz Ry Rx)
    translation: (B, 3) mm, applied after the rotation
    """

    rotation: torch.Tensor
    translation: torch.Tensor

    def __post_init__(self) -> None:
        r, t = self.rotation, self.translation
        if r.dim() != 2 or r.shape[1] != 3 or t.shape != r.shape:
            raise ConfigError(f"Pose: rotation and translation must both be (B, 3); got {tuple(r.shape)} and "
                              f"{tuple(t.shape)}")
        if not (torch.isfinite(r).all() and torch.isfinite(t).all()):
            raise ConfigError("Pose: rotation and translation must be finite")

    def __len__(self) -> int:
        return self.rotation.shape[0]

    @staticmethod
    def identity(batch: int = 1, device=None) -> Pose:
        z = torch.zeros(batch, 3, device=device)
        return Pose(z, z.clone())

    def matrix(self) -> torch.Tensor:
        """(B, 3, 3) rotation matrices R = Rz Ry Rx."""
        rx, ry, rz = self.rotation.unbind(1)
        o, z = torch.ones_like(rx), torch.zeros_like(rx)
        mx = torch.stack([o, z, z, z, rx.cos(), -rx.sin(), z, rx.sin(), rx.cos()], 1).view(-1, 3, 3)
        my = torch.stack([ry.cos(), z, ry.sin(), z, o, z, -ry.sin(), z, ry.cos()], 1).view(-1, 3, 3)
        mz = torch.stack([rz.cos(), -rz.sin(), z, rz.sin(), rz.cos(), z, z, z, o], 1).view(-1, 3, 3)
        return mz @ my @ mx


@dataclass(frozen=True)
class Detector:
    """Flat-panel cone-beam geometry.

    sdd_mm: source-to-detector distance; sod_mm: source-to-isocentre (world origin) distance;
    height, width: detector pixels; pixel_mm: pixel pitch on the detector.
    """

    sdd_mm: float = 1000.0
    sod_mm: float = 600.0
    height: int = 128
    width: int = 128
    pixel_mm: float = 2.0

    def __post_init__(self) -> None:
        check_range("detector.sdd_mm", self.sdd_mm, 0.0, low_inclusive=False)
        check_range("detector.sod_mm", self.sod_mm, 0.0, self.sdd_mm, low_inclusive=False, high_inclusive=False)
        check_range("detector.height", self.height, 1, integer=True)
        check_range("detector.width", self.width, 1, integer=True)
        check_range("detector.pixel_mm", self.pixel_mm, 0.0, low_inclusive=False)

    def rays(self, pose: Pose) -> tuple[torch.Tensor, torch.Tensor]:
        """Source (B, 3) and detector pixel centres (B, H, W, 3) in world mm for each pose."""
        dev, dt = pose.rotation.device, pose.rotation.dtype
        u = (torch.arange(self.width, device=dev, dtype=dt) - (self.width - 1) / 2) * self.pixel_mm
        v = (torch.arange(self.height, device=dev, dtype=dt) - (self.height - 1) / 2) * self.pixel_mm
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        det = torch.stack([uu, torch.full_like(uu, self.sdd_mm - self.sod_mm), -vv], -1)  # (H, W, 3)
        src = torch.tensor([0.0, -self.sod_mm, 0.0], device=dev, dtype=dt)
        r = pose.matrix()
        src_w = src @ r.transpose(1, 2) + pose.translation  # (B, 3)
        det_w = torch.einsum("hwj,bij->bhwi", det, r) + pose.translation[:, None, None]
        return src_w, det_w


# ------------------------------------------------------------------------------------------------------- DRR
METHODS = ("joseph", "trilinear")


class DRR(nn.Module):
    """Cone-beam DRRs of a CT volume; differentiable with respect to the pose.

    hu: (X, Y, Z) Hounsfield units in the world-frame axis order; spacing_mm: (sx, sy, sz);
    detector: the geometry; labels: optional (X, Y, Z) int label volume (0 = background) whose classes 1..L are
    projected as footprints; energies_kev: centres of the energy bins of the spectrum;
    method: "joseph" (default) samples each ray once per voxel plane across the axis the beam mostly runs along,
    bilinearly within the plane (Joseph, "An improved algorithm for reprojecting rays through pixel images",
    IEEE TMI 1:192, 1982); "trilinear" takes ``n_samples`` evenly spaced trilinear samples on the part of each ray
    inside the volume (midpoint rule); chunk_rays: rays projected at a time (bounds memory).
    """

    def __init__(self, hu: torch.Tensor, spacing_mm, detector: Detector, n_samples: int = 256,
                 labels: torch.Tensor | None = None, energies_kev=None, chunk_rays: int = 1 << 16,
                 method: str = "joseph"):
        super().__init__()
        hu = torch.as_tensor(hu)
        if hu.dim() != 3:
            raise DataError(f"DRR: hu must be a (X, Y, Z) volume; got shape {tuple(hu.shape)}")
        if not torch.isfinite(hu.float()).all():
            raise DataError("DRR: the volume holds NaN or infinite voxels")
        spacing = torch.as_tensor(spacing_mm, dtype=torch.float32).flatten()
        if spacing.numel() != 3 or not torch.isfinite(spacing).all() or (spacing <= 0).any():
            raise DataError(f"DRR: spacing_mm={spacing.tolist()} is not allowed; expected three positive mm values")
        check_range("n_samples", n_samples, 2, integer=True)
        check_range("chunk_rays", chunk_rays, 1, integer=True)
        self.method = check_choice("method", method, METHODS)
        self.detector, self.n_samples, self.chunk_rays = detector, n_samples, chunk_rays
        self.shape = tuple(hu.shape)
        channels = [decompose_hu(hu)]
        self.n_labels = 0
        if labels is not None:
            labels = torch.as_tensor(labels).long()
            if labels.shape != hu.shape:
                raise DataError(f"DRR: labels {tuple(labels.shape)} must have the volume's shape {tuple(hu.shape)}")
            self.n_labels = int(labels.max())
            if self.n_labels < 1:
                raise DataError("DRR: the label volume is empty (no voxel > 0); nothing to project")
            channels.append(F.one_hot(labels, self.n_labels + 1).permute(3, 0, 1, 2)[1:].float())
        vol = torch.cat(channels)  # (C, X, Y, Z)
        if method == "trilinear":
            # (1, C, X, Y, Z): grid_sample reads the last three dims as (D, H, W) = (x, y, z)
            self.register_buffer("volume", vol[None].contiguous())
        else:
            # one stack of 2D planes per axis a, (N_a, C, A1, A2) with (A1, A2) the other two axes in order: 2D
            # bilinear sampling (a vectorised kernel on CPU and GPU) instead of 3D trilinear
            for a in range(3):
                rest = [1 + i for i in range(3) if i != a]
                self.register_buffer(f"planes_{'xyz'[a]}", vol.permute(1 + a, 0, *rest).contiguous())
        self.register_buffer("spacing", spacing)
        e = torch.as_tensor(energies_kev if energies_kev is not None else np.arange(15.0, 151.0, 5.0)).double()
        self.register_buffer("energies_kev", e)
        self.register_buffer("mu", torch.stack([linear_mu("water", e), linear_mu("bone", e)]))  # (2, E) 1/mm

    @property
    def extent_mm(self) -> torch.Tensor:
        """(3,) half-size of the volume's box (to the outer voxel faces), mm."""
        return torch.tensor(self.shape, device=self.spacing.device) * self.spacing / 2

    def line_integrals(self, pose: Pose) -> torch.Tensor:
        """(B, C, H, W) integrals along each ray (mm) of the channels: water fraction, bone fraction, labels."""
        src, det = self.detector.rays(pose)
        b, h, w, _ = det.shape
        d = det.reshape(b, h * w, 3) - src[:, None]  # (B, R, 3) source -> pixel
        if self.method == "trilinear":
            out = self._trilinear(src, d)
        else:
            out = self._joseph(src, d)
        return out.reshape(b, -1, h, w)

    def _joseph(self, src: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """(B, C, R) line integrals by Joseph's method; src (B, 3) and d (B, R, 3) in world mm."""
        b, n_rays, _ = d.shape
        half = self.extent_mm.to(d.dtype)
        # the main axis of each pose: the one its mean ray runs along most (a discrete choice, no gradient)
        axis = d.detach().mean(1).abs().argmax(-1)  # (B,)
        out = d.new_zeros(b, self.planes_x.shape[1], n_rays)
        for a in axis.unique().tolist():
            sel = torch.nonzero(axis == a).flatten()
            planes = getattr(self, f"planes_{'xyz'[a]}")  # (N, C, A1, A2)
            rest = [i for i in range(3) if i != a]
            n = planes.shape[0]
            centres = (torch.arange(n, device=d.device, dtype=d.dtype) - (n - 1) / 2) * self.spacing[a].to(d.dtype)
            ds, ss = d[sel], src[sel]  # (b, R, 3), (b, 3)
            da = ds[..., a]
            da = torch.where(da.abs() < 1e-9, torch.full_like(da, 1e-9), da)
            step = self.spacing[a].to(d.dtype) * ds.norm(dim=-1) / da.abs()  # (b, R) mm of ray per plane
            chunk = max(1, self.chunk_rays // len(sel))
            for lo in range(0, n_rays, chunk):
                sl = slice(lo, min(lo + chunk, n_rays))
                t = (centres[:, None, None] - ss[None, :, None, a]) / da[None, :, sl]  # (N, b, r)
                p = ss[None, :, None, rest] + t[..., None] * ds[None, :, sl][..., rest]  # (N, b, r, 2) mm
                g = p / half[rest]  # normalised (A1, A2), align_corners=False: +-1 are the outer voxel faces
                # inside the box (the outer half voxel takes the face value: "border") and between source and pixel
                inside = ((g.abs() <= 1).all(-1) & (t >= 0) & (t <= 1)).to(planes.dtype)
                vals = F.grid_sample(planes, g.flip(-1).reshape(n, -1, 1, 2).to(planes.dtype), mode="bilinear",
                                     padding_mode="border", align_corners=False)[..., 0]  # (N, C, b * r)
                vals = vals * inside.reshape(n, 1, -1)
                r = sl.stop - sl.start
                out[sel, :, sl] = vals.sum(0).reshape(-1, len(sel), r).transpose(0, 1).to(d.dtype) * step[:, None, sl]
        return out

    def _trilinear(self, src: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """(B, C, R) line integrals from ``n_samples`` trilinear samples on the part of each ray inside the box."""
        b, n_rays, _ = d.shape
        src = src[:, None].expand(b, n_rays, 3)
        half = self.extent_mm.to(d.dtype)
        # slab method: where the segment src + t d, t in [0, 1], is inside the box
        inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
        t0, t1 = (-half - src) * inv, (half - src) * inv
        t_near = torch.minimum(t0, t1).amax(-1).clamp(0, 1)
        t_far = torch.maximum(t0, t1).amin(-1).clamp(0, 1)
        t_far = torch.maximum(t_far, t_near)
        length = (t_far - t_near) * d.norm(dim=-1)  # (B, R) mm inside the box
        mid = (torch.arange(self.n_samples, device=d.device, dtype=d.dtype) + 0.5) / self.n_samples
        out = []
        chunk = max(1, self.chunk_rays // b)
        for lo in range(0, n_rays, chunk):
            sl = slice(lo, min(lo + chunk, n_rays))
            t = t_near[:, sl, None] + (t_far - t_near)[:, sl, None] * mid  # (B, r, S)
            p = src[:, sl, None] + t[..., None] * d[:, sl, None]  # (B, r, S, 3) mm
            # normalised coordinates, align_corners=False convention (voxel centres as in the world frame); grid order
            # is (z, y, x); "border" padding: samples lie inside the box, the outer half voxel takes the face value
            g = (p / half).flip(-1)
            vals = F.grid_sample(self.volume.expand(b, -1, -1, -1, -1), g[:, None].to(self.volume.dtype),
                                 mode="bilinear", padding_mode="border", align_corners=False)  # (B, C, 1, r, S)
            out.append(vals[:, :, 0].mean(-1).to(d.dtype) * length[:, None, sl])
        return torch.cat(out, -1)

    def forward(self, pose: Pose, spectrum: torch.Tensor | None = None, photons: torch.Tensor | None = None,
                blur_mm: float = 0.0, scatter_fraction: float = 0.0, scatter_sigma_mm: float = 40.0,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """A radiograph per pose.

        spectrum: (B, E) photon weights over ``energies_kev`` (default: 120 kVp Kramers); photons: (B,) mean photon
        count per detector pixel with no object (None = noise free); blur_mm: Gaussian detector blur (std, mm on the
        detector); scatter_fraction: scatter-to-primary ratio at the open field, spread by a Gaussian of
        ``scatter_sigma_mm``. Returns {"image": (B, 1, H, W) log projection -ln(I / I0), "intensity": (B, 1, H, W)
        I / I0, "line": (B, 2, H, W) water/bone path lengths (mm), "footprint": (B, L, H, W) mm of each label}.
        """
        b = len(pose)
        lines = self.line_integrals(pose)
        lw = lines[:, :2].double()  # (B, 2, H, W)
        if spectrum is None:
            spectrum = kramers_spectrum(torch.full((b,), 120.0), self.energies_kev.cpu())
        spectrum = spectrum.to(lw.device, torch.float64)
        if spectrum.shape != (b, len(self.energies_kev)):
            raise ConfigError(f"spectrum has shape {tuple(spectrum.shape)}; expected ({b}, {len(self.energies_kev)})")
        att = torch.einsum("bmhw,me->behw", lw, self.mu)  # (B, E, H, W) total attenuation per energy
        intensity = torch.einsum("be,behw->bhw", spectrum, torch.exp(-att))[:, None]
        if scatter_fraction > 0:
            intensity = intensity + scatter_fraction * _blur(intensity, scatter_sigma_mm / self.detector.pixel_mm)
        if blur_mm > 0:
            intensity = _blur(intensity, blur_mm / self.detector.pixel_mm)
        if photons is not None:
            n0 = photons.to(lw.device, torch.float64).reshape(b, 1, 1, 1)
            counts = torch.poisson(intensity.detach() * n0, generator=generator)
            # straight-through: the noisy value forward, the noise-free gradient backward
            intensity = intensity + (counts.clamp_min(1) / n0 - intensity).detach()
        image = -torch.log(intensity.clamp_min(1e-12))
        out = {"image": image.float(), "intensity": intensity.float(), "line": lines[:, :2]}
        if self.n_labels:
            out["footprint"] = lines[:, 2:]
        return out


def _blur(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with std ``sigma_px`` pixels (reflect padding)."""
    if sigma_px <= 0:
        return x
    r = min(max(1, int(math.ceil(3 * sigma_px))), x.shape[-2] - 1, x.shape[-1] - 1)
    if r < 1:
        return x
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, device=x.device, dtype=x.dtype) / sigma_px) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def footprint_mask(footprint: torch.Tensor, min_mm: float = 1.0) -> torch.Tensor:
    """(B, L, H, W) label path lengths (mm) -> (B, H, W) int label map: the label with the longest path where
    any exceeds ``min_mm``, else 0 (background). A 3D mask's 2D footprint, free labels for a radiograph."""
    best, idx = footprint.max(1)
    return torch.where(best > min_mm, idx + 1, torch.zeros_like(idx))
