"""MRI physics against analytic answers: signal equations, FFT round trip, coil normalisation, SNR, artifacts."""

from __future__ import annotations

import math

import pytest
import torch

from physics import mri
from physics.mri import MRIProtocol, MRIScanner
from physics.phantoms import random_head, shepp_logan
from scarce.errors import ConfigError, DataError


def protocol(seq, tr, te, ti=0.0, flip=90.0, n=1) -> MRIProtocol:
    t = lambda v: torch.full((n,), float(v))
    return MRIProtocol(t(seq), t(tr), t(te), t(ti), t(flip))


def test_spin_echo_matches_hand_computed_values():
    # T1 = 1000 ms, T2 = 100 ms, TR = 1000 ms, TE = 100 ms: (1 - e^-1) e^-1
    s = mri.spin_echo(torch.tensor(1.0), torch.tensor(1000.0), torch.tensor(100.0), torch.tensor(1000.0),
                      torch.tensor(100.0))
    assert s.item() == pytest.approx((1 - math.exp(-1)) * math.exp(-1), rel=1e-6)
    # T1 recovery: at TR = T1 ln 2 half the magnetisation has recovered
    tr = 1000 * math.log(2)
    s = mri.signal(protocol(0, tr, 1e-6), torch.tensor([0.8]), torch.tensor([1000.0]), torch.tensor([80.0]),
                   torch.tensor([50.0]))
    assert s.item() == pytest.approx(0.4, rel=1e-5)


def test_gradient_echo_peaks_at_the_ernst_angle():
    t1, tr = torch.tensor(1084.0), torch.tensor(20.0)
    angles = torch.linspace(1, 90, 8901)
    s = mri.gradient_echo(torch.tensor(1.0), t1, torch.tensor(50.0), tr, torch.tensor(3.0), angles)
    ernst = math.degrees(math.acos(math.exp(-20 / 1084)))
    assert angles[s.argmax()].item() == pytest.approx(ernst, abs=0.02)


def test_inversion_recovery_nulls_csf_for_flair():
    tab = mri.relaxation_table(1.5)
    t1_csf = tab[0, 1].item()
    ti = mri.null_ti(t1_csf, 9000.0)
    s = mri.signal(protocol(2, 9000, 100, ti), tab[:, 0], tab[:, 1], tab[:, 2], tab[:, 3])[0]
    assert s[0].item() < 1e-6 and (s[1:3] > 0.05).all()  # CSF dark, GM and WM bright
    # T1-weighted (MPRAGE-like) at 3 T: WM > GM > CSF
    tab3 = mri.relaxation_table(3.0)
    s = mri.signal(protocol(2, 2300, 3, 1000), tab3[:, 0], tab3[:, 1], tab3[:, 2], tab3[:, 3])[0]
    assert s[2] > s[1] > s[0]


def test_parameter_maps_mix_rates():
    tab = mri.relaxation_table(3.0, ("gm", "wm"))
    f = torch.tensor([[0.5, 0.5]]).reshape(1, 2, 1)
    m = mri.parameter_maps(f, tab)
    assert m["t1"].item() == pytest.approx(1 / (0.5 / 1820 + 0.5 / 1084))
    assert m["pd"].item() == pytest.approx(0.745)


def test_fft_round_trip_and_parseval():
    x = torch.randn(2, 3, 16, 12, dtype=torch.complex128)
    k = mri.fft2c(x)
    assert torch.allclose(mri.ifft2c(k), x, atol=1e-12)
    assert torch.allclose(k.abs().pow(2).sum(), x.abs().pow(2).sum())  # orthonormal
    # a centred delta has a flat k-space; the DC sample sits at the centre
    d = torch.zeros(8, 8, dtype=torch.complex128)
    d[4, 4] = 1
    assert torch.allclose(mri.fft2c(d).abs(), torch.full((8, 8), 1 / 8, dtype=torch.float64))


def test_coil_combination_returns_the_image():
    img = shepp_logan(32).to(torch.complex64)
    s = mri.coil_maps(8, (32, 32))
    assert torch.allclose(s.abs().pow(2).sum(0), torch.ones(32, 32), atol=1e-5)
    recon = mri.rss(mri.ifft2c(mri.fft2c(s[None] * img)), dim=1)[0]
    assert torch.allclose(recon, img.abs(), atol=1e-5)


@pytest.mark.parametrize("kind", mri.MASK_KINDS)
def test_cartesian_mask_acceleration_and_centre(kind):
    m = mri.cartesian_mask(128, 4.0, 0.08, kind, torch.Generator().manual_seed(0))
    assert m[64 - 5:64 + 5].all()  # fully sampled centre
    assert abs(m.sum().item() - 128 / 4) <= 10
    assert mri.cartesian_mask(128, 1.0, 0.0).all()


def test_measured_snr_equals_requested_within_5_percent():
    img = shepp_logan(128).to(torch.complex128)[None].expand(4, -1, -1)
    snr = torch.tensor([5.0, 10.0, 20.0, 40.0], dtype=torch.float64)
    sigma = mri.sigma_for_snr(img, snr)
    noisy = mri.ifft2c(mri.add_noise(mri.fft2c(img), sigma, torch.Generator().manual_seed(1)))
    fg = img.abs() > 0.1 * img.abs().amax()
    noise = (noisy - img)
    measured = (img.abs() * fg).sum((1, 2)) / fg.sum((1, 2)) / noise.real.std(dim=(1, 2))
    assert torch.allclose(measured, snr, rtol=0.05)


def test_scanner_snr_through_coils_and_shapes():
    head = random_head((64, 64), torch.Generator().manual_seed(0))
    scanner = MRIScanner(head["fractions"][None], spacing_mm=3.0, field_t=3.0, tissues=mri.TISSUES, n_coils=4)
    p = protocol(1, 20, 4, 0, 25, n=2)
    out = scanner(torch.tensor([0, 0]), p, snr=torch.tensor([15.0, 15.0]), generator=torch.Generator().manual_seed(0))
    assert out["image"].shape == (2, 64, 64) and out["kspace"].shape == (2, 4, 64, 64)
    assert out["image"].dtype == torch.float32 and out["kspace"].dtype == torch.complex64
    # matched-filter coil combination: noise std per component = mean foreground / SNR
    combined = (scanner.coils.conj() * mri.ifft2c(out["kspace"])).sum(1)
    fg = out["clean"] > 0.1 * out["clean"].amax()
    measured = out["clean"][fg].mean() / (combined - out["clean"]).real.std(dim=(1, 2))
    assert torch.allclose(measured, torch.tensor([15.0, 15.0]), rtol=0.05)
    assert not torch.equal(out["image"][0], out["image"][1])  # independent noise per sample


def test_undersampling_aliases_and_gibbs_rings():
    img = shepp_logan(64)[None]
    k = mri.fft2c(img.to(torch.complex64))
    full_err = (mri.ifft2c(k).abs() - img).abs().mean()
    under = mri.ifft2c(k * mri.cartesian_mask(64, 4.0, 0.08, "equispaced", torch.Generator().manual_seed(0))).abs()
    gibbs = mri.ifft2c(mri.gibbs_truncate(k, 0.25)).abs()
    assert full_err < 1e-5
    assert (under - img).abs().mean() > 20 * full_err + 0.01
    assert (gibbs - img).abs().mean() > 0.01


def test_ghost_appears_half_a_field_of_view_away():
    img = torch.zeros(1, 32, 32)
    img[0, 12:20, 2:8] = 1.0  # object on the left half
    k = mri.ghosting(mri.fft2c(img.to(torch.complex64)), torch.tensor([0.6]))
    out = mri.ifft2c(k).abs()[0]
    assert out[12:20, 18:24].mean() > 0.2  # ghost shifted by W/2
    assert out[12:20, 18:24].mean() == pytest.approx(abs(math.sin(0.3)), rel=0.02)  # |1 - e^{i phi}| / 2


def test_motion_blurs_and_zero_motion_is_exact():
    head = random_head((48, 48), torch.Generator().manual_seed(3))
    sc = MRIScanner(head["fractions"][None], spacing_mm=4.0, tissues=mri.TISSUES, n_coils=2)
    p = protocol(0, 500, 15, n=1)
    still = sc(torch.tensor([0]), p)["image"]
    zero = sc(torch.tensor([0]), p, motion_deg=torch.zeros(1), motion_mm=torch.zeros(1))["image"]
    moved = sc(torch.tensor([0]), p, motion_deg=torch.tensor([3.0]), motion_mm=torch.tensor([4.0]),
               generator=torch.Generator().manual_seed(0))["image"]
    assert torch.allclose(still, zero, atol=1e-4)
    assert (moved - still).abs().mean() > 0.01 * still.mean()


def test_bias_field_is_smooth_and_positive():
    f = mri.bias_field((32, 32), torch.tensor([0.0, 0.3]), torch.Generator().manual_seed(0))
    assert torch.allclose(f[0], torch.ones(32, 32))
    assert (f[1] > 0).all() and f[1].std() > 0.01
    span = f[1].max() - f[1].min()
    assert f[1].diff(dim=0).abs().max() < 3 * span / 32  # smooth: a low-order field, no pixel-to-pixel jumps


def test_bad_inputs_are_clear_errors():
    with pytest.raises(DataError, match="NaN"):
        MRIScanner(torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(DataError, match="fractions must be"):
        MRIScanner(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ConfigError, match="spacing_mm"):
        MRIScanner(torch.zeros(1, 3, 8, 8), spacing_mm=0.0)
    with pytest.raises(ConfigError, match="te_ms must be < tr_ms"):
        protocol(0, 10, 20)
    with pytest.raises(ConfigError, match="field_t"):
        mri.relaxation_table(7.0)
    with pytest.raises(DataError, match="empty foreground"):
        mri.sigma_for_snr(torch.ones(1, 4, 4), torch.tensor([10.0]), torch.zeros(1, 4, 4, dtype=torch.bool))


@pytest.mark.parametrize("size", [(32, 48), (31, 33)])  # even: the shift-free FFT path; odd: fft2c itself
def test_scanner_kspace_is_the_true_centred_kspace(size):
    head = random_head(size, torch.Generator().manual_seed(2))
    sc = MRIScanner(head["fractions"][None], spacing_mm=3.0, tissues=mri.TISSUES, n_coils=3)
    assert sc.shift_free == (size[0] % 2 == 0 and size[1] % 2 == 0)
    p = protocol(0, 600, 12, n=2)
    out = sc(torch.tensor([0, 0]), p, acceleration=2.0, generator=torch.Generator().manual_seed(0))
    expected = mri.fft2c(sc.coils * out["clean"][:, None].to(torch.complex64)) * out["mask"]
    assert torch.allclose(out["kspace"], expected, atol=1e-5)
    assert torch.allclose(out["image"], mri.rss(mri.ifft2c(expected)), atol=1e-5)
    # with noise: nothing is added on the lines that were not acquired, and the acquired ones differ
    noisy = sc(torch.tensor([0, 0]), p, snr=torch.tensor([20.0, 20.0]), acceleration=2.0,
               generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy["mask"], out["mask"])
    assert (noisy["kspace"][..., ~noisy["mask"]] == 0).all()
    assert (noisy["kspace"][..., noisy["mask"]] - expected[..., out["mask"]]).abs().mean() > 1e-4
    assert sc(torch.tensor([0]), protocol(0, 600, 12), return_kspace=False)["kspace"] is None


@pytest.mark.parametrize("kind", ["random", "equispaced"])
def test_scanner_pruned_transforms_equal_plain_fft2c(kind):
    # the scanner skips/prunes H-transforms and works slice by slice; the plain centred FFTs must give the same
    # k-space and images, noise included (same generator stream: the mask, then the noise on the acquired lines)
    head = random_head((48, 64), torch.Generator().manual_seed(4))
    sc = MRIScanner(head["fractions"][None], spacing_mm=3.0, tissues=mri.TISSUES, n_coils=3)
    p, snr, idx = protocol(1, 20, 4, 0, 25, n=2), torch.tensor([12.0, 25.0]), torch.tensor([0, 0])
    outs = {rk: sc(idx, p, snr=snr, acceleration=3.0, mask_kind=kind, generator=torch.Generator().manual_seed(7),
                   return_kspace=rk) for rk in (True, False)}
    g = torch.Generator().manual_seed(7)
    mask = mri.cartesian_mask(64, 3.0, 0.08, kind, g)
    cols = torch.nonzero(mask).flatten()
    clean = outs[True]["clean"]
    sigma = mri.sigma_for_snr(clean, snr) * math.sqrt(2)
    noise = torch.randn((2, 3, 48, len(cols)), dtype=torch.complex64, generator=g) * sigma.view(-1, 1, 1, 1)
    k = mri.fft2c(sc.coils * clean[:, None].to(torch.complex64)) * mask
    k[..., cols] += noise * sc.kspace_sign[:, cols]  # drawn in the scanner's uncentred frame: a +-1 pattern apart
    image = mri.rss(mri.ifft2c(k))
    assert torch.equal(outs[True]["mask"], mask) and torch.equal(outs[False]["mask"], mask)
    assert torch.allclose(outs[True]["kspace"], k, atol=1e-6 * k.abs().max())
    for rk in (True, False):
        assert outs[rk]["image"].dtype == torch.float32
        assert torch.allclose(outs[rk]["image"], image, atol=1e-5 * image.max())


def test_scanner_noise_only_on_acquired_lines_at_the_requested_snr():
    head = random_head((64, 64), torch.Generator().manual_seed(5))
    sc = MRIScanner(head["fractions"][None], spacing_mm=3.0, tissues=mri.TISSUES, n_coils=4)
    p, snr, idx = protocol(0, 600, 12, n=2), torch.tensor([10.0, 30.0]), torch.tensor([0, 0])
    run = lambda **kw: sc(idx, p, acceleration=2.0, generator=torch.Generator().manual_seed(3), **kw)
    noisy, clean = run(snr=snr), run()
    mask = noisy["mask"]
    assert torch.equal(mask, clean["mask"]) and mask.sum() == 32
    d = noisy["kspace"] - clean["kspace"]
    assert (d[..., ~mask] == 0).all()
    sigma = mri.sigma_for_snr(noisy["clean"], snr)  # per real/imaginary component, per coil
    acquired = torch.view_as_real(d[..., mask]).flatten(1)  # (B, 2 x 4 coils x 64 x 32)
    assert torch.allclose(acquired.std(1), sigma, rtol=0.03)
    assert (acquired.mean(1).abs() < 0.03 * sigma).all()
    # the image-only path (which never forms k-space) draws the same noise and gives the same image
    only = run(snr=snr, return_kspace=False)["image"]
    assert torch.allclose(only, noisy["image"], atol=1e-5 * only.max())
    assert (only - clean["image"]).abs().mean() > 0.1 * sigma.min()
