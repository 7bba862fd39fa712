"""What people listen to and look at: WAV examples, spectrogram images, W&B audio (offline works the same)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from scarce.io import atomic_path


def spectrogram_image(log_mels: Sequence[torch.Tensor], scale: int = 2) -> np.ndarray:
    """Log-mels (n_mels, frames) stacked top to bottom (low frequencies at the bottom of each), magma colours,
    -> (H, W, 3) uint8; each panel on its own dB range (top 80 dB)."""
    from matplotlib import colormaps

    cmap = colormaps["magma"]
    width = max(m.shape[1] for m in log_mels)
    panels = []
    for m in log_mels:
        m = m.detach().float().cpu().numpy()[::-1]
        top = m.max()
        v = np.clip((m - (top - np.log(1e8))) / np.log(1e8), 0, 1)  # 80 dB of power below the peak
        v = np.pad(v, ((0, 0), (0, width - v.shape[1])))
        panels.append((cmap(v)[..., :3] * 255).astype(np.uint8))
        panels.append(np.full((2, width, 3), 255, np.uint8))  # white rule between panels
    img = np.concatenate(panels[:-1], 0)
    return np.kron(img, np.ones((scale, scale, 1), np.uint8)) if scale > 1 else img


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int) -> Path:
    """One 16-bit PCM WAV file, written atomically."""
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(np.asarray(wave, np.float32), -1, 1), sample_rate, subtype="PCM_16",
                 format="WAV")
    return Path(path)


def log_audio(key: str, waves: Sequence[np.ndarray], sample_rate: int, captions: Sequence[str],
              image: np.ndarray | None = None, loggers: Sequence = ()) -> bool:
    """Audio clips (and a spectrogram image) to the W&B run: the one a WandbLogger in ``loggers`` holds, else the
    active ``wandb.run``. Returns whether anything was logged."""
    run = None
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            run = lg.experiment
    if run is None:
        import sys

        wandb = sys.modules.get("wandb")  # only if a logger already started W&B: never start a run here
        run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return False
    import wandb

    payload = {key: [wandb.Audio(np.asarray(w, np.float32), sample_rate=sample_rate, caption=c)
                     for w, c in zip(waves, captions)]}
    if image is not None:
        payload[f"{key}_spectrograms"] = wandb.Image(image, caption=" / ".join(captions))
    run.log(payload)
    return True


def preview_audio(data, loggers: Sequence, out_dir: str | Path, per_class: int = 1, max_classes: int = 8) -> Path:
    """The first clip of each of the first classes of an AudioSet: spectrograms as one image (PNG under
    ``out_dir`` and to every logger) and the clips as W&B audio. Returns the image path."""
    from scarce.loggers import log_image
    from speech.mel import LogMel

    picks = []
    for c in range(min(len(data.classes), max_classes)):
        picks.extend(np.flatnonzero(data.labels == c)[:per_class].tolist())
    mel = LogMel(data.sample_rate)
    img = spectrogram_image([mel(torch.from_numpy(data.waves[i])[None])[0] for i in picks])
    captions = [data.classes[int(data.labels[i])] for i in picks]
    log_audio("synthetic/audio", [data.waves[i] for i in picks], data.sample_rate, captions, None, loggers)
    return log_image(list(loggers), "synthetic/spectrograms", img, out_dir, caption=" / ".join(captions))
