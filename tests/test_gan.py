"""Conditional GAN: nets at 8/28/64, DiffAugment, losses and R1, real Lightning fits on tiny dict-batch data."""

from __future__ import annotations

import functools

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from datamodules.image_set import COND, IMAGE, LABEL, PARAMS
from models.augment import DiffAugment, parse_policy
from models.base import load_generator
from models.gan import (ConditionalGAN, hinge_d, hinge_g, mode_seeking_ratio, nonsaturating_d, nonsaturating_g,
                        pair_conditions, r1_penalty)
from models.nets.gan import Discriminator, Generator
from scarce.errors import ConfigError, DataError

torch.set_num_threads(1)
S = 8  # sklearn-digits size: fast enough for real fits on CPU


# ------------------------------------------------------------------------------------------- tiny data
class LeftRight(Dataset):
    """Two classes of (1, S, S) images: class 0 bright on the left half, class 1 bright on the right half."""

    def __init__(self, n: int = 128, cond_channels: int = 0, num_params: int = 0, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        x = torch.full((n, 1, S, S), -1.0)
        x[self.y == 0, :, :, : S // 2] = 1
        x[self.y == 1, :, :, S // 2:] = 1
        self.x = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
        self.cond = torch.rand(n, cond_channels, S, S, generator=g) * 2 - 1 if cond_channels else None
        self.params = torch.randn(n, num_params, generator=g) if num_params else None

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, idx: list[int]) -> dict:
        i = torch.tensor(idx)
        batch = {IMAGE: self.x[i], LABEL: self.y[i]}
        if self.cond is not None:
            batch[COND] = self.cond[i]
        if self.params is not None:
            batch[PARAMS] = self.params[i]
        return batch


def loader(ds: LeftRight, batch_size: int = 32, shuffle: bool = True) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=ds.collate)


ADAM = functools.partial(torch.optim.Adam, lr=2e-3, betas=(0.0, 0.99))


def tiny_gan(**kw) -> ConditionalGAN:
    args = {"image_size": S, "channels": 1, "num_classes": 2, "classes": ["left", "right"], "z_dim": 8,
            "g_width": 8, "d_width": 8, "embed_dim": 8, "grid_every_n_epochs": 0, "optimizer_g": ADAM,
            "optimizer_d": ADAM}
    return ConditionalGAN(**{**args, **kw})


def fit(model, ds, tmp_path, epochs=1, val=False, **trainer_kw) -> L.Trainer:
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=str(tmp_path), num_sanity_val_steps=0,
                        **trainer_kw)
    trainer.fit(model, loader(ds), loader(ds, 64, shuffle=False) if val else None)
    return trainer


def sq_dist(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return sum((x - y).pow(2).sum() for x, y in zip(a, b)).item()


def sn_layers(module: nn.Module) -> list[tuple[str, bool]]:
    return [(n, hasattr(m, "parametrizations") and "weight" in m.parametrizations)
            for n, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding))]


# ------------------------------------------------------------------------------------------------- nets
@pytest.mark.parametrize("size,channels", [(8, 1), (28, 1), (64, 3)])
def test_shapes_at_each_size(size, channels):
    g = Generator(z_dim=16, channels=channels, image_size=size, width=8, cond_channels=2, cond_dim=6)
    d = Discriminator(channels, size, width=8, cond_channels=2, cond_dim=6)
    z, c, cond = torch.randn(3, 16), torch.randn(3, 6), torch.rand(3, 2, size, size) * 2 - 1
    x = g(z, c, cond)
    assert x.shape == (3, channels, size, size)
    assert x.abs().max() <= 1  # tanh output
    assert d(x, c, cond).shape == (3,)


def test_generator_uses_condition_image():
    g = Generator(z_dim=4, channels=1, image_size=28, width=8, cond_channels=1)
    z = torch.randn(2, 4)
    a = g(z, cond=torch.zeros(2, 1, 28, 28))
    b = g(z, cond=torch.ones(2, 1, 28, 28))
    assert (a - b).abs().mean() > 1e-4
    with pytest.raises(ValueError, match="cond"):
        g(z)


@pytest.mark.parametrize("size", [100, 5, 9])
def test_unbuildable_size_is_a_config_error(size):
    with pytest.raises(ConfigError, match=f"model.image_size={size}"):
        Generator(8, 1, size, 8)
    with pytest.raises(ConfigError, match="model.image_size"):
        tiny_gan(image_size=size)


def test_every_discriminator_layer_is_spectrally_normalised():
    model = tiny_gan(num_params=3)
    layers = sn_layers(model.discriminator)  # the D net and its own condition embedding
    assert len(layers) >= 8 and any(n.startswith("embed.") for n, _ in layers)
    assert all(ok for _, ok in layers), [n for n, ok in layers if not ok]
    assert not any(ok for _, ok in sn_layers(model.generator))  # G is not normalised


def test_projection_term_changes_output_with_label():
    model = tiny_gan()
    x = torch.randn(4, 1, S, S)
    d0 = model.discriminator(x, torch.zeros(4, dtype=torch.long))
    d1 = model.discriminator(x, torch.ones(4, dtype=torch.long))
    assert (d0 - d1).abs().min() > 1e-6
    model.eval()  # freeze the power-iteration vectors
    model.discriminator.net.embed = None  # without the projection term the label has no path into D
    torch.testing.assert_close(model.discriminator(x, torch.zeros(4, dtype=torch.long)),
                               model.discriminator(x, torch.ones(4, dtype=torch.long)))


# ---------------------------------------------------------------------------------------------- DiffAugment
def seeded(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_diffaugment_is_differentiable():
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    out = DiffAugment("color,translation,cutout")(x, generator=seeded())
    assert out.shape == x.shape
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_diffaugment_identity_when_off():
    x = torch.rand(2, 1, 8, 8)
    for policy in ("", None, " , "):
        assert torch.equal(DiffAugment(policy)(x, generator=seeded()), x)
        assert not DiffAugment(policy)


def test_spatial_ops_move_image_and_condition_together():
    img = torch.rand(6, 1, 16, 16) * 2 - 1
    both = torch.cat([img, img, img], 1)  # image channel + 2 condition channels holding the same picture
    out = DiffAugment("translation,cutout")(both, image_channels=1, generator=seeded(3))
    assert not torch.equal(out, both)
    torch.testing.assert_close(out[:, 1:], out[:, :1].expand(-1, 2, -1, -1), rtol=0, atol=0)
    # translation only moves pixels: every output value is an input value of that sample or the zero fill
    moved = DiffAugment("translation")(both, image_channels=1, generator=seeded(4))
    for i in range(len(img)):
        allowed = torch.cat([img[i].flatten(), torch.zeros(1)])
        assert torch.isin(moved[i, 0].flatten(), allowed).all()


def test_colour_ops_touch_only_image_channels():
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    cond = torch.rand(4, 2, 8, 8) * 2 - 1
    out = DiffAugment("color")(torch.cat([x, cond], 1), image_channels=3, generator=seeded())
    assert torch.equal(out[:, 3:], cond)
    assert (out[:, :3] - x).abs().mean() > 1e-3
    gray = torch.rand(4, 1, 8, 8)
    assert torch.equal(DiffAugment("saturation")(gray, generator=seeded()), gray)  # no colour to saturate


def test_diffaugment_reproducible_with_seeded_generator():
    x = torch.rand(4, 3, 16, 16)
    aug = DiffAugment("color,translation,cutout")
    torch.testing.assert_close(aug(x, generator=seeded(7)), aug(x, generator=seeded(7)), rtol=0, atol=0)
    assert not torch.equal(aug(x, generator=seeded(7)), aug(x, generator=seeded(8)))


def test_cutout_zeroes_at_most_a_half_side_square():
    x = torch.ones(16, 1, 8, 8)
    out = DiffAugment("cutout")(x, generator=seeded(1))
    zeros = (out == 0).sum(dim=(1, 2, 3))
    assert (zeros > 0).all() and (zeros <= 16).all()  # a 4x4 square, clipped at the border


def test_unknown_augmentation_op_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"model.diffaug=.*'rotate'.*'translation'"):
        parse_policy("color,rotate")
    with pytest.raises(ConfigError, match="model.diffaug"):
        tiny_gan(diffaug="flip")


# ------------------------------------------------------------------------------------------- losses, R1
def test_loss_values_on_known_logits():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    # D: mean(relu(1 - [2, .5])) = .25, mean(relu(1 + [-2, .5])) = .75; G: -mean([-2, .5]) = .75
    assert hinge_d(real, fake).item() == pytest.approx(1.0)
    assert hinge_g(fake).item() == pytest.approx(0.75)
    def sp(v: float) -> float:
        return float(np.log1p(np.exp(v)))

    assert nonsaturating_d(real, fake).item() == pytest.approx((sp(-2) + sp(-0.5)) / 2 + (sp(-2) + sp(0.5)) / 2)
    assert nonsaturating_g(fake).item() == pytest.approx((sp(2) + sp(-0.5)) / 2)
    with pytest.raises(ConfigError, match="model.loss='wgan'"):
        tiny_gan(loss="wgan")


def test_r1_penalty_value_and_gradient_path():
    w = torch.randn(1, 1, 4, 4, requires_grad=True)
    x = torch.randn(5, 1, 4, 4, requires_grad=True)
    logits = (x * w).sum(dim=(1, 2, 3))  # a linear critic: dD/dx = w for every sample, so R1 = ||w||^2
    r1 = r1_penalty(logits, x)
    assert r1.item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5) and r1.item() > 0
    r1.backward()  # the penalty is differentiable in D's weights (double backward)
    torch.testing.assert_close(w.grad, 2 * w.detach())
    d = Discriminator(1, S, 8)
    real = torch.randn(3, 1, S, S, requires_grad=True)
    r1 = r1_penalty(d(real), real)
    r1.backward()
    assert r1.item() > 0 and d.blocks[0].c1.parametrizations.weight.original.grad.abs().sum() > 0


def test_mode_seeking_pairs_share_conditions_and_ratio_is_exact():
    labels = torch.tensor([3, 1, 4, 1, 5])
    assert pair_conditions(labels).tolist() == [3, 1, 3, 1, 5]  # odd batch: the last sample keeps its own
    assert pair_conditions(None) is None
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [1.0, 3.0]])  # pairs (0, 2), (1, 3): mean |dz| = (2 + 0 + 0 + 2) / 4 = 1
    fake = torch.zeros(4, 1, 2, 2)
    fake[2] = 0.6  # pair (0, 2) differs by 0.6 per pixel, pair (1, 3) not at all: mean |dG| = 0.3
    assert mode_seeking_ratio(fake, z).item() == pytest.approx(0.3)
    with pytest.raises(ValueError, match="at least 2"):
        mode_seeking_ratio(fake[:1], z[:1])
    with pytest.raises(ConfigError, match="model.mode_seeking=-1"):
        tiny_gan(mode_seeking=-1.0)


def test_mode_seeking_pushes_a_collapsed_generator_apart():
    g = Generator(8, 1, S, 8)
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    before = mode_seeking_ratio(g(z), z).item()
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    for _ in range(20):  # the term alone, as G's loss would add it
        loss = 1.0 / (mode_seeking_ratio(g(z), z) + 1e-5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert mode_seeking_ratio(g(z), z).item() > 2 * before


# ------------------------------------------------------------------------------------------ Lightning fits
def test_fit_steps_both_optimizers_and_ema_tracks_g(tmp_path):
    model = tiny_gan(r1_gamma=1.0, r1_every=2, ema_decay=0.99, grid_every_n_epochs=1, mode_seeking=1.0)
    g0 = [p.detach().clone() for p in model.generator.parameters()]
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    ema0 = [p.detach().clone() for p in model.generator_ema.parameters()]
    trainer = fit(model, LeftRight(64), tmp_path, epochs=1, val=True)
    assert model._g_count == 2 and model._d_count == 2
    g1 = [p.detach() for p in model.generator.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(g0, g1))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(d0, model.discriminator.parameters()))
    ema1 = [p.detach() for p in model.generator_ema.parameters()]
    assert 0 < sq_dist(ema1, g1) < sq_dist(ema0, g1)  # the average moved toward G without becoming it
    for key in ("train/d_loss", "train/g_loss", "train/r1", "train/ms_ratio", "val/loss"):
        assert torch.isfinite(trainer.callback_metrics[key]), key
    assert trainer.callback_metrics["val/loss"] > 0 and trainer.callback_metrics["train/ms_ratio"] > 0
    assert list((tmp_path / "samples").glob("*.png"))  # the sample grid was written


def test_val_loss_is_deterministic(tmp_path):
    model = tiny_gan()
    ds = LeftRight(64)
    fit(model, ds, tmp_path, epochs=1)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path))
    a = trainer.validate(model, loader(ds, 16, shuffle=False), verbose=False)[0]["val/loss"]
    b = trainer.validate(model, loader(ds, 16, shuffle=False), verbose=False)[0]["val/loss"]
    assert a == b and a > 0


def test_learns_class_conditional_layout(tmp_path):
    L.seed_everything(0, verbose=False)
    model = tiny_gan(ema_decay=0.9)
    fit(model, LeftRight(128), tmp_path, epochs=15)  # 60 steps, ~2 s
    out = model.generate(64, seed=1)
    img = out.images[..., 0].astype(np.float32) / 127.5 - 1  # (N, S, S)
    left_minus_right = img[:, :, : S // 2].mean((1, 2)) - img[:, :, S // 2:].mean((1, 2))
    assert left_minus_right[out.labels == 0].mean() > 0.5
    assert left_minus_right[out.labels == 1].mean() < -0.5


def test_bf16_mixed_fit_with_d_steps_and_schedulers(tmp_path):
    halve = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    model = tiny_gan(r1_gamma=1.0, r1_every=1, cond_channels=1, d_steps=2, scheduler=halve)
    step, autocast = model.training_step, []
    model.training_step = lambda *a, **k: (autocast.append(torch.is_autocast_enabled("cpu")), step(*a, **k))[1]
    trainer = fit(model, LeftRight(64, cond_channels=1), tmp_path, epochs=1, val=True, precision="bf16-mixed")
    for key in ("train/d_loss", "train/g_loss", "train/r1", "val/loss"):
        assert torch.isfinite(trainer.callback_metrics[key]), key
    assert all(p.dtype == torch.float32 for p in model.parameters())  # mixed: weights stay float32
    assert autocast == [True, True]  # Lightning autocasts the manual training step
    assert (model._g_count, model._d_count) == (2, 4)
    assert [o.param_groups[0]["lr"] for o in trainer.optimizers] == pytest.approx([1e-3, 1e-3])  # both stepped


def test_checkpoint_round_trip_and_seeded_generation(tmp_path):
    model = tiny_gan(num_params=2, cond_channels=1)
    ds = LeftRight(64, cond_channels=1, num_params=2)
    trainer = fit(model, ds, tmp_path, epochs=1)
    ckpt = tmp_path / "gan.ckpt"
    trainer.save_checkpoint(ckpt)
    raw = torch.load(ckpt, weights_only=True)
    assert raw["scarce"]["class_path"] == "models.gan.ConditionalGAN" and raw["scarce"]["extra"]["g_steps"] == 2
    loaded = load_generator(str(ckpt))
    kw = {"cond": ds.cond[:10], "params": ds.params[:10].numpy()}
    a = model.generate(10, seed=3, **kw)
    b = loaded.generate(10, seed=3, batch_size=4, **kw)  # another batch size: same images
    np.testing.assert_array_equal(a.images, b.images)
    assert a.images.shape == (10, S, S, 1) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.labels, np.arange(10) % 2)  # balanced by default
    assert a.classes == ["left", "right"]
    assert not np.array_equal(a.images, loaded.generate(10, seed=4, **kw).images)
    assert loaded._g_count == 2


def test_conditioned_variants_require_their_inputs(tmp_path):
    model = tiny_gan(num_params=2, cond_channels=1)
    with pytest.raises(ConfigError, match=r"cond.*model.cond_channels=1.*\(3, 1, 8, 8\)"):
        model.generate(3, params=torch.zeros(3, 2))
    with pytest.raises(ConfigError, match=r"params.*model.num_params=2"):
        model.generate(3, cond=torch.zeros(3, 1, S, S))
    with pytest.raises(ConfigError, match="shape"):
        model.generate(3, cond=torch.zeros(3, 2, S, S), params=torch.zeros(3, 2))
    with pytest.raises(ConfigError, match="labels"):
        model.generate(2, labels=[0, 2], cond=torch.zeros(2, 1, S, S), params=torch.zeros(2, 2))
    plain = tiny_gan(num_classes=0, classes=None)
    with pytest.raises(ConfigError, match="model.cond_channels=0"):
        plain.generate(2, cond=torch.zeros(2, 1, S, S))
    assert plain.generate(2).labels.tolist() == [0, 0]
    with pytest.raises(DataError, match="'cond'"):  # a batch without the condition image the model needs
        fit(model, LeftRight(32, num_params=2), tmp_path)


def test_multi_label_generation():
    model = tiny_gan(multi_label=True, num_classes=3, classes=["a", "b", "c"])
    out = model.generate(4, labels=np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 1]]))
    assert out.labels.shape == (4, 3) and out.images.shape == (4, S, S, 1)
    assert model.generate(3).labels.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    with pytest.raises(ConfigError, match="multi_label"):
        tiny_gan(multi_label=True, num_classes=0, classes=None)
