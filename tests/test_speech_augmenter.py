"""The learned conditional augmenter (cVAE on log-mels + Griffin-Lim): it learns (reconstructs far better than the
mean spectrogram, and its samples carry their label's pitch), round-trips a checkpoint, and the real hedgewars
recipe runs end to end in fast_dev_run (WAV folder + labels.csv + manifest, evaluation report)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_cfg

from datamodules.speech import AUDIO, LABEL, SPEAKER, ClipRows, fetched_batch
from models.base import load_generator
from models.speech_augmenter import SpeechCVAE
from scarce.errors import ConfigError, DataError
from speech.mel import LogMel

SR, N = 8000, 4000  # 0.5 s clips at 8 kHz keep the test in seconds
TONES = (250.0, 500.0, 1000.0)  # class k is a tone at TONES[k] with a few harmonics
HEDGEWARS = Path("/usr/share/games/hedgewars/Data/Sounds/voices")
ASTERISK = Path("/usr/share/asterisk/sounds/en_US_f_Allison")


def toy_clips(n_per: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(N) / SR
    waves, labels, speakers = [], [], []
    for k, f in enumerate(TONES):
        for i in range(n_per):
            f0 = f * (1 + 0.03 * (torch.rand((), generator=g) - 0.5))
            x = sum(torch.sin(2 * math.pi * h * f0 * t + torch.rand((), generator=g) * 6) / h for h in (1, 2, 3))
            env = torch.clamp(torch.rand((), generator=g) * 0.5 + 0.5, max=1) * torch.hann_window(N, periodic=False)
            waves.append(0.3 * x * env + 0.003 * torch.randn(N, generator=g))
            labels.append(k)
            speakers.append(i % 2)
    return torch.stack(waves).float(), torch.tensor(labels), torch.tensor(speakers)


def dominant(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SR)[spec.argmax()])


def small_model(**kw) -> SpeechCVAE:
    args = dict(sample_rate=SR, num_samples=N, num_classes=3, classes=["low", "mid", "high"], num_speakers=2,
                n_mels=32, n_fft=256, hop=80, latent_dim=8, width=16, embed_dim=8, kl_warmup_steps=50,
                griffin_lim_iters=16, optimizer=lambda params: torch.optim.Adam(params, lr=3e-3))
    return SpeechCVAE(**{**args, **kw})


def test_cvae_learns_reconstructs_and_samples_carry_their_label(tmp_path):
    torch.manual_seed(0)
    x, y, s = toy_clips()
    loader = torch.utils.data.DataLoader(ClipRows(x, y, s), batch_size=24, shuffle=True, collate_fn=fetched_batch)
    model = small_model()
    trainer = L.Trainer(max_steps=150, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(model, loader)
    model.eval()
    batch = {AUDIO: x, LABEL: y, SPEAKER: s}
    with torch.no_grad():
        recon = model.losses(batch, sample=False)["recon"]
        feats = model.features(x)
        baseline = (feats - feats.mean(0, keepdim=True)).pow(2).mean()  # the mean spectrogram of the set
    assert float(recon) < 0.3 * float(baseline), (float(recon), float(baseline))
    assert float(model.mel_stats[1]) > 0.5  # the standardisation was fitted on data, not left at (0, 1)

    syn = model.generate(30, seed=1)
    assert syn.waves.shape == (30, N) and np.isfinite(syn.waves).all() and np.abs(syn.waves).max() <= 0.99 + 1e-6
    assert np.bincount(syn.labels).tolist() == [10, 10, 10]
    # heard back through the log-mel front end, each sample is nearest to its own class's mean real spectrum
    with torch.no_grad():
        profile = lambda w: model.mel(w).mean(2)  # noqa: E731 - (B, n_mels) mean log-mel over time
        centroids = torch.stack([profile(x[y == k]).mean(0) for k in range(3)])
        nearest = torch.cdist(profile(torch.from_numpy(syn.waves)), centroids).argmin(1).numpy()
    assert np.mean(nearest == syn.labels) >= 0.9, f"only {np.mean(nearest == syn.labels):.0%} sound like their label"
    assert np.array_equal(model.generate(6, seed=1).waves, model.generate(6, seed=1).waves)  # seeded

    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    back = load_generator(str(path))
    assert torch.equal(back.mel_stats, model.mel_stats) and back.speakers == ["0", "1"]
    assert np.allclose(back.generate(6, seed=3).waves, model.generate(6, seed=3).waves, atol=1e-5)

    from generate import sample  # the generate.py entry point on this checkpoint: a WAV folder of one class

    cfg = compose_cfg("generate.yaml", [f"ckpt_path={path}", "n=4", "labels=[high]",
                                        f"output={tmp_path / 'high'}"], tmp_path)
    out = sample(cfg)
    table = pd.read_csv(Path(out["output"]) / "labels.csv")
    assert table["label"].tolist() == ["high"] * 4
    assert json.loads(Path(out["manifest"]).read_text())["class_counts"]["high"] == 4


def test_griffin_lim_inverts_a_log_mel():
    t = torch.arange(N) / SR
    x = (0.3 * torch.sin(2 * math.pi * 440 * t))[None]
    mel = LogMel(SR, 256, 80, 32)
    back = mel.invert(mel(x), N, n_iter=32)
    assert back.shape == (1, N) and dominant(back[0].numpy()) == pytest.approx(440.0, abs=20)


def test_cvae_bad_config_and_batches():
    with pytest.raises(ConfigError, match=r"model.width=12 is not allowed; expected a multiple of 8"):
        small_model(width=12)
    with pytest.raises(ConfigError, match="model.classes has 2 names but model.num_classes=3"):
        small_model(classes=["a", "b"])
    model = small_model()
    with pytest.raises(DataError, match=r"batch\['audio'\] has shape \(2, 100\)"):
        model.losses({AUDIO: torch.zeros(2, 100), LABEL: torch.zeros(2, dtype=torch.long)})
    with pytest.raises(ConfigError, match=r"label indices must be in 0..2"):
        model.generate(2, labels=torch.tensor([0, 5]))


@pytest.mark.slow
@pytest.mark.parametrize("experiment,folder,classes", [("hedgewars_cvae", HEDGEWARS, 23),
                                                       ("asterisk_cvae", ASTERISK, 10)])
def test_speech_recipe_fast_dev_run(tmp_path, experiment, folder, classes):
    if not folder.is_dir():
        pytest.skip(f"{folder} not installed (make data)")
    from train import train

    n = 2 * classes
    cfg = compose_cfg("train.yaml", [f"experiment={experiment}", "++trainer.fast_dev_run=true", "logger=csv",
                                     f"generate.n={n}", "evaluation.seeds=[0]", "evaluation.classifier.steps=3",
                                     "evaluation.copies=1", "evaluation.examples=1"], tmp_path)
    _, summary = train(cfg)
    out = Path(summary["synthetic"])
    table = pd.read_csv(out / "labels.csv")
    assert len(table) == n and table["label"].nunique() == classes and all((out / f).is_file() for f in table["file"])
    manifest = json.loads(Path(summary["manifest"]).read_text())
    assert manifest["clips"] == n and manifest["sample_rate"] == 16000 and len(manifest["output_sha256"]) == 64
    report = json.loads(Path(summary["report"]).read_text())
    settings = report["utility"]["settings"]
    assert set(settings) == {"none", "generic", "global", "targeted", "learned"}
    assert 0 <= settings["none"]["atypical"]["accuracy"]["mean"] <= 1
    assert report["meta"]["chance"] == pytest.approx(1 / classes)
    assert 0 <= report["meta"]["train_accuracy_none"]["mean"] <= 1
    assert f"Chance = 1/{classes}" in Path(summary["report_md"]).read_text()
    assert report["meta"]["speakers"]["atypical"] and not set(report["meta"]["speakers"]["atypical"]) & set(
        report["meta"]["speakers"]["train"])
    assert list((tmp_path / "examples").glob("*_original.wav")) and list((tmp_path / "examples").glob("*.png"))
    assert list(tmp_path.glob("synthetic_spectrograms*.png"))
