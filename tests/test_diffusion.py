"""Conditional diffusion: the U-Net, the schedule and samplers, and the LightningModule trained by a real Trainer."""

from __future__ import annotations

import functools

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, Dataset

from datamodules.image_set import COND, IMAGE, LABEL, NULL_LABEL, PARAMS
from models.base import load_generator
from models.diffusion import ConditionalDiffusion
from models.nets.unet import ConditionalUNet, UNet
from models.sampling import (
    SAMPLERS,
    CosineSchedule,
    Denoiser,
    get_sampler,
    sample_ddim,
    sdedit,
    spaced_timesteps,
)
from scarce.errors import ConfigError, DataError
from scarce.metrics import VAL_LOSS

torch.set_num_threads(1)
TINY = {"width": 16, "channel_mults": (1, 2), "num_res_blocks": 1, "timesteps": 50, "sample_steps": 10}


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-zero weights everywhere (the zero-initialised output layers would make every prediction 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module


class DictImages(Dataset):
    """A tiny in-memory image set that yields whole dict batches (``__getitems__``), as the image datamodules do."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, cond_channels: int = 0, num_params: int = 0):
        self.images, self.labels = images, labels
        g = torch.Generator().manual_seed(1)
        # condition channels derived from the image (a "simulation"), params fixed per sample
        self.cond = images.repeat(1, cond_channels, 1, 1) * 0.5 if cond_channels else None
        self.params = torch.rand(len(images), num_params, generator=g) if num_params else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, idx: list[int]) -> dict:
        batch = {IMAGE: self.images[idx], LABEL: self.labels[idx]}
        if self.cond is not None:
            batch[COND] = self.cond[idx]
        if self.params is not None:
            batch[PARAMS] = self.params[idx]
        return batch


def _as_is(batch: dict) -> dict:
    return batch


def loader(ds: Dataset, batch_size: int = 32, shuffle: bool = False) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=_as_is)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 8x8 digits (bundled, no download) as (N, 1, 8, 8) in [-1, 1] and (N,) labels, first 3 classes."""
    d = load_digits()
    keep = d.target < 3
    x = torch.tensor(d.images[keep], dtype=torch.float32)[:, None] / 8.0 - 1.0
    return x, torch.tensor(d.target[keep], dtype=torch.long)


def trainer(tmp_path, **kw) -> L.Trainer:
    opts = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False,
            "enable_checkpointing": False, "default_root_dir": str(tmp_path), "num_sanity_val_steps": 0}
    return L.Trainer(**(opts | kw))


# ------------------------------------------------------------------------------------------------------ U-Net
@pytest.mark.parametrize("size, mults, attn", [(8, (1, 2, 2), (4,)), (28, (1, 2, 2), (7,)), (32, (1, 2), (16,))])
@pytest.mark.parametrize("cond_channels, cond_dim", [(0, 0), (2, 0), (0, 12), (3, 12)])
def test_unet_shapes(size, mults, attn, cond_channels, cond_dim):
    for attention in ((), attn):
        net = UNet(1, 2, size, width=8, channel_mults=mults, num_res_blocks=1, attention_resolutions=attention,
                   cond_channels=cond_channels, cond_dim=cond_dim)
        has_attn = any(getattr(m, "attn", None) is not None for m in net.down)
        assert has_attn == bool(attention)
        x = torch.randn(3, 1, size, size)
        ci = torch.randn(3, cond_channels, size, size) if cond_channels else None
        cv = torch.randn(3, cond_dim) if cond_dim else None
        out = net(x, torch.tensor([0, 10.5, 999]), cond_image=ci, cond_vec=cv)
        assert out.shape == (3, 2, size, size)
        randomize(net)
        assert net(x, torch.tensor([0, 10, 999]), ci, cv).std() > 0  # the zero init is not all there is


def test_unet_conditions_change_the_output():
    net = randomize(ConditionalUNet(1, 8, num_classes=3, num_params=2, cond_channels=1, width=8, channel_mults=(1, 2)))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 5])
    c, p = torch.randn(2, 1, 8, 8), torch.randn(2, 2)
    base = net(x, t, cond=c, label=torch.tensor([0, 1]), params=p)
    assert not torch.allclose(base, net(x, t, cond=c, label=torch.tensor([2, 2]), params=p))
    assert not torch.allclose(base, net(x, t, cond=-c, label=torch.tensor([0, 1]), params=p))
    assert not torch.allclose(base, net(x, t, cond=c, label=torch.tensor([0, 1]), params=p + 1))


def test_bad_image_size_names_channel_mults():
    with pytest.raises(ConfigError, match=r"model\.channel_mults=\[1, 2, 2\].*divisible by 4.*30x30"):
        UNet(1, 1, 30, channel_mults=(1, 2, 2))
    net = UNet(1, 1, 8, width=8, channel_mults=(1, 2, 2), num_res_blocks=1)
    with pytest.raises(ConfigError, match=r"model\.channel_mults.*6x6"):
        net(torch.randn(1, 1, 6, 6), torch.zeros(1))
    with pytest.raises(ConfigError, match=r"model\.attention_resolutions=\[5\].*\[28, 14, 7\]"):
        UNet(1, 1, 28, channel_mults=(1, 2, 2), attention_resolutions=(5,))
    with pytest.raises(ConfigError, match="model.channel_mults"):
        ConditionalDiffusion(image_size=28, channels=1, channel_mults=(1, 2, 2, 2))


# ------------------------------------------------------------------------------------------ schedule, denoiser
def test_cosine_schedule_properties():
    s = CosineSchedule(1000)
    ab = s.alpha_bar64
    assert ab.dtype == torch.float64 and ab.shape == (1000,)
    assert (ab > 0).all() and (ab < 1).all()
    assert (ab[1:] < ab[:-1]).all()  # strictly more noise at every step
    assert ab[0] > 0.999 and ab[-1] < 1e-6
    betas = 1 - ab[1:] / ab[:-1]
    assert betas.max() <= 0.999 + 1e-12  # clipped
    ones = torch.ones(1000, dtype=torch.float64)
    torch.testing.assert_close(s.sqrt_ab.double() ** 2 + s.sqrt_1m_ab.double() ** 2, ones)
    # near t = 0 the noise level keeps its digits (computed in float64, then cast)
    torch.testing.assert_close(s.sqrt_1m_ab[0].double(), (1 - ab[0]).sqrt(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_prediction_round_trips_x0_given_the_true_noise(prediction):
    sched = CosineSchedule(1000)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(16, 1, 8, 8, generator=g) * 2 - 1, torch.randn(16, 1, 8, 8, generator=g)
    t = torch.linspace(0, 900 if prediction == "eps" else 999, 16).long()  # eps -> x0 divides by sqrt(ab) ~ 0 at T
    xt = sched.q_sample(x0, t, eps)
    target = sched.target(prediction, x0, t, eps)
    oracle = lambda x, tt, **kw: target
    x0_hat, eps_hat = Denoiser(oracle, sched, prediction)(xt, t)
    torch.testing.assert_close(x0_hat, x0, atol=2e-5, rtol=0)
    torch.testing.assert_close(eps_hat, eps, atol=2e-5, rtol=0)
    with pytest.raises(ConfigError, match="model.prediction='x0'"):
        Denoiser(oracle, sched, "x0")


def test_guidance_scale_0_is_exactly_the_unconditional_model():
    net = randomize(ConditionalUNet(1, 8, num_classes=3, cond_channels=1, width=8, channel_mults=(1, 2)))
    den = Denoiser(net, CosineSchedule(50), "eps")
    x, t, c = torch.randn(4, 1, 8, 8), torch.full((4,), 20), torch.randn(4, 1, 8, 8)
    label = torch.tensor([0, 1, 2, 1])
    uncond = net(x, t, cond=c, label=torch.full((4,), NULL_LABEL))
    cond = net(x, t, cond=c, label=label)
    assert not torch.allclose(uncond, cond)
    assert torch.equal(den.model_output(x, t, cond=c, label=label, guidance_scale=0.0), uncond)
    assert torch.equal(den.model_output(x, t, cond=c, label=label, guidance_scale=1.0), cond)
    torch.testing.assert_close(den.model_output(x, t, cond=c, label=label, guidance_scale=3.0),
                               uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-5)


def test_sampler_registry_and_step_counts():
    assert set(SAMPLERS) >= {"ddim", "ddpm"}
    with pytest.raises(ConfigError, match=r"model.sampler='heun'.*\{'ddim', 'ddpm'"):
        get_sampler("heun")
    ts = spaced_timesteps(50, 50)
    assert ts.tolist() == list(range(49, -1, -1))
    few = spaced_timesteps(50, 4)
    assert few[0] == 49 and few[-1] == 0 and len(set(few.tolist())) == 4
    with pytest.raises(ConfigError, match=r"model.sample_steps=51.*\[1, 50\]"):
        spaced_timesteps(50, 51)


def test_ddim_runs_with_all_or_few_steps_and_sdedit_endpoints():
    net = randomize(ConditionalUNet(1, 8, width=8, channel_mults=(1, 2)), seed=3)
    den = Denoiser(net, CosineSchedule(50), "v")
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    full = sample_ddim(den, x, spaced_timesteps(50, 50))
    few = sample_ddim(den, x, spaced_timesteps(50, 5))
    assert full.shape == few.shape == (2, 1, 8, 8)
    assert torch.isfinite(full).all() and torch.isfinite(few).all() and full.abs().max() <= 1.0 + 1e-5
    assert not torch.allclose(full, few)
    image = torch.rand(2, 1, 8, 8) * 2 - 1
    assert torch.equal(sdedit(den, image, 0.0, 10), image)
    # strength 1 ignores the image: the same as plain sampling from the same noise
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    plain = sample_ddim(den, torch.randn(2, 1, 8, 8, generator=g2), spaced_timesteps(50, 10), generator=g2)
    torch.testing.assert_close(sdedit(den, image, 1.0, 10, generator=g1), plain)
    half = sdedit(den, image, 0.5, 10, generator=torch.Generator().manual_seed(5))
    assert half.shape == image.shape and not torch.equal(half, image)
    with pytest.raises(ConfigError, match="strength=1.5"):
        sdedit(den, image, 1.5, 10)


# ------------------------------------------------------------------------------------- the LightningModule
def small_model(**kw) -> ConditionalDiffusion:
    args = dict(image_size=8, channels=1, num_classes=3, **TINY, grid_every_n_epochs=0,
                optimizer=functools.partial(torch.optim.Adam, lr=2e-3))
    return ConditionalDiffusion(**(args | kw))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_generate_is_seeded_and_balanced(sampler):
    m = small_model(sampler=sampler)
    randomize(m.ema_net, seed=2)
    a, b, c = (m.generate(7, seed=s, batch_size=4) for s in (0, 0, 1))
    assert a.images.dtype == np.uint8 and a.images.shape == (7, 8, 8, 1)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert a.labels.tolist() == [0, 1, 2, 0, 1, 2, 0] and a.classes == ["0", "1", "2"]
    g = m.generate(3, seed=0, labels=[2, 2, 2], guidance_scale=2.0, steps=3)
    assert g.labels.tolist() == [2, 2, 2] and g.meta["steps"] == 3
    with pytest.raises(ConfigError, match=r"labels=3 .*\[0, 2\]"):
        m.generate(2, labels=[0, 3])
    with pytest.raises(ConfigError, match="steps=99"):
        m.generate(2, steps=99)
    with pytest.raises(ConfigError, match="sampler='nope'"):
        m.generate(2, sampler="nope")


def test_generate_requires_cond_and_params_when_the_model_has_them():
    m = small_model(num_classes=0, cond_channels=2, num_params=3)
    randomize(m.ema_net)
    with pytest.raises(ConfigError, match=r"model.cond_channels=2.*\(4, 2, 8, 8\)"):
        m.generate(4, params=torch.zeros(4, 3))
    with pytest.raises(ConfigError, match=r"model.num_params=3.*\(4, 3\)"):
        m.generate(4, cond=torch.zeros(4, 2, 8, 8))
    with pytest.raises(ConfigError, match="no classes"):
        m.generate(4, cond=torch.zeros(4, 2, 8, 8), params=torch.zeros(4, 3), labels=[0, 0, 0, 0])
    cond = torch.rand(4, 2, 8, 8) * 2 - 1
    a = m.generate(4, cond=cond, params=torch.zeros(3))  # one parameter vector broadcast to all samples
    b = m.generate(4, cond=cond, params=torch.ones(4, 3))
    assert a.images.shape == (4, 8, 8, 1) and not np.array_equal(a.images, b.images)
    with pytest.raises(ConfigError, match="cond was given but this model takes none"):
        small_model().generate(2, cond=cond[:2])
    # sdedit of a condition-image model: strength 0 gives the input back exactly
    img = torch.rand(4, 1, 8, 8) * 2 - 1
    assert torch.equal(m.sdedit(img, 0.0, cond=cond, params=torch.zeros(3)), img)
    out = m.sdedit(img, 0.6, cond=cond, params=torch.zeros(3), steps=5, seed=3)
    assert out.shape == img.shape and out.abs().max() <= 1 and torch.equal(
        out, m.sdedit(img, 0.6, cond=cond, params=torch.zeros(3), steps=5, seed=3))


def test_missing_batch_key_is_a_clear_error(digits, tmp_path):
    x, y = digits
    m = small_model(cond_channels=1)
    with pytest.raises(DataError, match=r"model.cond_channels=1 but the batch has no 'cond'"):
        trainer(tmp_path, fast_dev_run=True).fit(m, loader(DictImages(x[:32], y[:32])))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fast_dev_run_with_every_condition(digits, tmp_path, precision):
    x, y = digits
    ds = DictImages(x[:64], y[:64], cond_channels=2, num_params=3)
    m = small_model(cond_channels=2, num_params=3, prediction="v", grid_every_n_epochs=1, grid_per_class=2)
    before = [p.clone() for p in m.net.parameters()]
    tr = trainer(tmp_path, fast_dev_run=True, precision=precision)
    tr.fit(m, loader(ds, shuffle=True), loader(ds))
    assert np.isfinite(float(tr.callback_metrics["train/loss"])) and np.isfinite(float(tr.callback_metrics[VAL_LOSS]))
    assert any(not torch.equal(p, q) for p, q in zip(before, m.net.parameters()))
    assert list((tmp_path / "samples").glob("*.png"))  # the per-class grid, sampled with the grid's cond/params


def test_multi_label_model_trains_and_generates(digits, tmp_path):
    x, y = digits
    multi_hot = torch.nn.functional.one_hot(y[:32], 3).float()
    multi_hot[::2, 2] = 1.0  # some images carry two labels
    m = small_model(multi_label=True, classes=["zero", "one", "two"], grid_every_n_epochs=1, grid_per_class=2)
    trainer(tmp_path, fast_dev_run=True).fit(m, loader(DictImages(x[:32], multi_hot)))
    assert list((tmp_path / "samples").glob("*.png"))
    out = m.generate(4, seed=0)
    assert out.multi_label and out.labels.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]
    assert out.classes == ["zero", "one", "two"]
    with pytest.raises(ConfigError, match="must be 0 or 1"):
        m.generate(1, labels=[[2, 0, 0]])
    with pytest.raises(ConfigError, match=r"shape \(2,\); this model expects \(2, 3\)"):
        m.generate(2, labels=[0, 1])


def test_val_loss_falls_and_checkpoint_round_trip(digits, tmp_path):
    x, y = digits  # ~540 images of the digits 0, 1, 2
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    train, val = DictImages(x[perm[:448]], y[perm[:448]]), DictImages(x[perm[448:]], y[perm[448:]])
    L.seed_everything(0, verbose=False)
    m = small_model(ema_decay=0.99, grid_every_n_epochs=3, grid_per_class=2)
    tr = trainer(tmp_path, max_epochs=3)
    first = tr.validate(m, loader(val), verbose=False)[0][VAL_LOSS]
    again = tr.validate(m, loader(val), verbose=False)[0][VAL_LOSS]
    assert first == again  # t and noise fixed by batch index: comparable across epochs
    tr.fit(m, loader(train, shuffle=True), loader(val))
    last = float(tr.callback_metrics[VAL_LOSS])
    assert last < 0.6 * first, (first, last)
    assert list((tmp_path / "samples").glob("*.png"))  # a grid at the last epoch
    # the EMA net is what samples and what the checkpoint carries
    assert any(not torch.equal(p, q) for p, q in zip(m.net.parameters(), m.ema_net.parameters()))
    path = tmp_path / "diffusion.ckpt"
    tr.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)
    assert raw["scarce"]["class_path"] == "models.diffusion.ConditionalDiffusion"
    loaded = load_generator(str(path))
    assert isinstance(loaded, ConditionalDiffusion) and loaded.hparams.timesteps == TINY["timesteps"]
    a = m.generate(9, seed=4, guidance_scale=1.5)
    b = loaded.generate(9, seed=4, guidance_scale=1.5)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.images.std() > 0
