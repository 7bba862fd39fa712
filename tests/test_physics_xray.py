"""X-ray physics against analytic answers: sphere chords, slabs, Beer-Lambert, beam hardening, noise, geometry,
gradients to the pose, and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from physics import xray
from physics.phantoms import random_head
from physics.xray import DRR, Detector, Pose
from scarce.errors import ConfigError, DataError

FAR = dict(sdd_mm=200000.0, sod_mm=100000.0)  # nearly parallel rays, magnification 2


def sphere_hu(n: int = 64, radius_mm: float = 20.0, sub: int = 3) -> torch.Tensor:
    """A water sphere (HU 0) in air on an n^3, 1 mm grid, partial-volume voxelised by sub^3 supersampling."""
    ax = torch.arange(n) - (n - 1) / 2
    f = torch.zeros(n, n, n)
    for a in range(sub):
        for b in range(sub):
            for c in range(sub):
                o = [(q + 0.5) / sub - 0.5 for q in (a, b, c)]
                f += (((ax[:, None, None] + o[0]) ** 2 + (ax[None, :, None] + o[1]) ** 2
                       + (ax[None, None, :] + o[2]) ** 2) <= radius_mm ** 2).float()
    return -1000 + 1000 * f / sub ** 3


def test_sphere_line_integrals_equal_mu_times_chord():
    det = Detector(height=7, width=7, pixel_mm=10.0, **FAR)  # 5 mm between rays at the object
    drr = DRR(sphere_hu(), (1.0, 1.0, 1.0), det, n_samples=256)
    mu = float(xray.linear_mu("water", torch.tensor([60.0])))
    out = drr(Pose.identity(1), spectrum=xray.monochromatic(60.0, drr.energies_kev, 1))
    row = out["image"][0, 0, 3].double()  # through the centre, offsets -15 .. 15 mm
    d = torch.arange(-3, 4).double() * 5
    chord = 2 * (20.0 ** 2 - d ** 2).clamp_min(0).sqrt()
    assert torch.allclose(row / mu, chord, rtol=0.01, atol=0.3)
    assert out["line"][0, 1].abs().max() < 1e-6  # no bone in a water sphere


def test_slab_path_length_grows_with_obliquity():
    n = 64
    hu = torch.full((n, n, n), -1000.0)
    hu[:, 27:37, :] = 0.0  # a 10 mm water slab normal to y (the beam axis)
    det = Detector(sdd_mm=300.0, sod_mm=150.0, height=1, width=5, pixel_mm=20.0)
    drr = DRR(hu, (1.0, 1.0, 1.0), det, n_samples=512)
    line = drr.line_integrals(Pose.identity(1))[0, 0, 0].double()
    u = (torch.arange(5) - 2).double() * 20.0
    expected = 10.0 / torch.cos(torch.atan(u / 300.0))
    assert torch.allclose(line, expected, rtol=0.01)


def test_polychromatic_beam_hardens():
    n = 32
    hu = torch.full((n, n, n), 0.0)  # water filling the box: path 32 mm on the central ray
    det = Detector(height=1, width=1, pixel_mm=1.0, **FAR)
    drr = DRR(hu, (1.0, 2.0, 1.0), det, n_samples=64)  # y spacing 2 mm: 64 mm of water
    e = drr.energies_kev
    spec = xray.kramers_spectrum(torch.tensor([80.0]), e.cpu())
    out = drr(Pose.identity(1), spectrum=spec)
    expected = (spec[0] * torch.exp(-xray.linear_mu("water", e.cpu()) * 64.0)).sum()  # Beer-Lambert per bin
    assert out["intensity"].item() == pytest.approx(expected.item(), rel=1e-4)
    # the effective attenuation per mm falls with thickness (beam hardening) and lies within the spectrum's range
    thin = DRR(hu[:, :4], (1.0, 2.0, 1.0), det, n_samples=64)(Pose.identity(1), spectrum=spec)
    assert out["image"].item() / 64.0 < thin["image"].item() / 8.0
    assert spec[0].sum().item() == pytest.approx(1.0) and spec[0, e.cpu() > 80].sum() == 0


def test_hu_decomposition_reproduces_ct_numbers():
    hu = torch.tensor([-1000.0, -500.0, 0.0, 500.0, xray.bone_hu(), 3000.0])
    w, b = xray.decompose_hu(hu)
    e = torch.tensor([xray.CT_EFFECTIVE_KEV])
    mu_w, mu_b = xray.linear_mu("water", e), xray.linear_mu("bone", e)
    mu = w * mu_w + b * mu_b
    back = 1000 * (mu / mu_w - 1)
    assert torch.allclose(back[:5].float(), hu[:5], atol=0.5)
    assert b[-1] == 1.0  # denser than cortical bone saturates


def test_geometry_convention_is_pinned():
    """A bright voxel at +x lands in the right columns, at +z in the top rows, magnified by sdd / sod."""
    n = 41
    hu = torch.full((n, n, n), -1000.0)
    hu[30, 20, 20] = 3000.0  # x = +10 mm
    hu[20, 20, 35] = 3000.0  # z = +15 mm
    det = Detector(sdd_mm=1000.0, sod_mm=500.0, height=81, width=81, pixel_mm=1.0)
    img = DRR(hu, (1.0, 1.0, 1.0), det, n_samples=200).line_integrals(Pose.identity(1))[0, 1]
    centre = 40
    col = img[centre].argmax().item()
    row = img[:, centre].argmax().item()
    assert col - centre == pytest.approx(20, abs=1)  # +10 mm x 2 magnification, to the right
    assert centre - row == pytest.approx(30, abs=1)  # +15 mm x 2, upwards
    # a pose rotated 90 degrees about z looks along -x: the +x voxel now sits on the central column
    rot = Pose(torch.tensor([[0.0, 0.0, math.pi / 2]]), torch.zeros(1, 3))
    img2 = DRR(hu, (1.0, 1.0, 1.0), det, n_samples=200).line_integrals(rot)[0, 1]
    assert abs(img2[centre].argmax().item() - centre) <= 1


def test_joseph_equals_dense_trilinear_marching_on_a_head():
    head = random_head((40, 44, 36), torch.Generator().manual_seed(0))
    det = Detector(sdd_mm=600.0, sod_mm=350.0, height=20, width=24, pixel_mm=4.0)
    fast = DRR(head["hu"], (1.5, 1.2, 2.0), det, labels=head["labels"])
    dense = DRR(head["hu"], (1.5, 1.2, 2.0), det, labels=head["labels"], n_samples=600, method="trilinear")
    # main axes y, x (rotated 80 degrees about z) and z (tilted 90 degrees about x) in one batch, shifted
    pose = Pose(torch.tensor([[0.1, -0.05, 0.3], [0.0, 0.05, 1.4], [math.pi / 2, 0.0, 0.1]]),
                torch.tensor([[4.0, 0.0, -3.0], [0.0, 5.0, 0.0], [2.0, 0.0, 0.0]]))
    a, b = fast.line_integrals(pose), dense.line_integrals(pose)
    assert a.shape == b.shape == (3, 2 + 5, 20, 24) and a.dtype == torch.float32
    for i in range(3):  # each pose on its own, so an axis mix-up in one cannot hide behind the others
        err = (a[i] - b[i]).abs().sum() / b[i].abs().sum()
        assert err < 0.02, (i, err)
    assert (a[:, 1] > 1).any()  # rays cross the skull: the bone channel is not trivially zero


@pytest.mark.parametrize("method", xray.METHODS)
def test_gradients_flow_to_the_pose_and_recover_a_shift(method):
    hu = sphere_hu(32, 8.0, sub=1)
    hu[20:24, 14:18, 10:14] = 1500.0  # an off-centre bone block breaks the symmetry
    det = Detector(sdd_mm=400.0, sod_mm=200.0, height=16, width=16, pixel_mm=4.0)
    drr = DRR(hu, (1.0, 1.0, 1.0), det, n_samples=64, method=method)
    target = drr(Pose(torch.zeros(1, 3), torch.tensor([[2.0, 0.0, -1.5]])))["image"]
    trans = torch.zeros(1, 3, requires_grad=True)
    rot = torch.zeros(1, 3, requires_grad=True)
    opt = torch.optim.Adam([trans], lr=0.4)
    first = None
    for _ in range(20):
        loss = (drr(Pose(rot, trans))["image"] - target).pow(2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(rot.grad).all() and rot.grad.abs().sum() > 0  # the rotation gets a gradient too
        opt.step()
    assert loss.item() < 0.1 * first
    assert abs(trans[0, 0].item() - 2.0) < 0.5 and abs(trans[0, 2].item() + 1.5) < 0.5


def test_poisson_noise_scatter_blur_and_footprints():
    hu = sphere_hu(32, 10.0, sub=1)
    labels = (hu > -500).long()
    det = Detector(height=16, width=16, pixel_mm=4.0, **FAR)
    drr = DRR(hu, (1.0, 1.0, 1.0), det, n_samples=64, labels=labels)
    pose = Pose.identity(2)
    clean = drr(pose)
    noisy = drr(pose, photons=torch.tensor([1e4, 1e4]), generator=torch.Generator().manual_seed(0))
    # Poisson: the variance of I / I0 equals its mean / N0 (the corner pixels see the open beam)
    open_beam = noisy["intensity"][:, 0, :3, :3].flatten()
    assert open_beam.var().item() == pytest.approx(1e-4, rel=0.5)
    assert not torch.equal(noisy["image"][0], noisy["image"][1])
    blurred = drr(pose, blur_mm=8.0)["image"]
    assert blurred.max() < clean["image"].max() and blurred.sum().item() == pytest.approx(clean["image"].sum().item(),
                                                                                           rel=0.1)
    scat = drr(pose, scatter_fraction=0.2)["intensity"]
    assert (scat > clean["intensity"]).all()
    mask = xray.footprint_mask(clean["footprint"])
    assert ((mask == 1) == (clean["line"][:, 0] > 1.0)).float().mean() > 0.95  # footprint = the sphere's shadow
    assert clean["image"].shape == (2, 1, 16, 16) and clean["image"].dtype == torch.float32


def test_bad_inputs_are_clear_errors():
    det = Detector(height=4, width=4)
    with pytest.raises(DataError, match="NaN"):
        DRR(torch.full((4, 4, 4), float("nan")), (1, 1, 1), det)
    with pytest.raises(DataError, match="spacing_mm"):
        DRR(torch.zeros(4, 4, 4), (1, 0, 1), det)
    with pytest.raises(DataError, match="empty"):
        DRR(torch.zeros(4, 4, 4), (1, 1, 1), det, labels=torch.zeros(4, 4, 4))
    with pytest.raises(ConfigError, match="detector.sod_mm"):
        Detector(sdd_mm=100.0, sod_mm=200.0)
    with pytest.raises(ConfigError, match="Pose"):
        Pose(torch.zeros(2, 3), torch.zeros(1, 3))
    with pytest.raises(ConfigError, match="method='siddon' is not allowed"):
        DRR(torch.zeros(4, 4, 4), (1, 1, 1), det, method="siddon")
    with pytest.raises(DataError, match=r"hu must be a \(X, Y, Z\) volume"):
        DRR(torch.zeros(4, 4), (1, 1, 1), det)
    with pytest.raises(ConfigError, match="material"):
        xray.linear_mu("lead", torch.tensor([50.0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_simulators_run_where_their_buffers_are_and_match_the_cpu():
    from physics import mri
    from physics.mri import MRIProtocol, MRIScanner

    head = random_head((24, 24, 24), torch.Generator().manual_seed(0))
    det = Detector(sdd_mm=400.0, sod_mm=200.0, height=8, width=8, pixel_mm=4.0)
    drr = DRR(head["hu"], (1.0, 1.0, 1.0), det, labels=head["labels"])
    pose = Pose(torch.tensor([[0.1, 0.0, 0.3]]), torch.tensor([[1.0, 0.0, 0.0]]))
    cpu = drr(pose)
    gpu = drr.to("cuda")(Pose(pose.rotation.cuda(), pose.translation.cuda()))
    assert gpu["image"].device.type == "cuda" and gpu["footprint"].device.type == "cuda"
    assert torch.allclose(gpu["image"].cpu(), cpu["image"], rtol=1e-3, atol=1e-3)
    sc = MRIScanner(head["fractions"][None, :, :, :, 12], spacing_mm=2.0, tissues=mri.TISSUES)
    t = lambda v: torch.full((1,), float(v))
    p = MRIProtocol(t(0), t(500), t(15), t(0), t(90))
    a = sc(torch.tensor([0]), p)["image"]
    b = sc.to("cuda")(torch.tensor([0], device="cuda"), p.to("cuda"))["image"]
    assert b.device.type == "cuda" and torch.allclose(b.cpu(), a, atol=1e-4)
