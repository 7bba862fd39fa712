"""Train-on-real(+augmented) / test-on-held-out-real-speakers for speech: does augmentation help atypical voices?

Protocol, per seed: a SmallCNN phrase classifier on standardised log-mels is trained from scratch for the same
number of steps in four settings, and tested on held-out *speakers* (never seen in training, by the generator or by
the augmenters): the typical group (``test``) and the atypical group (``atypical``, the most atypical voices).

- ``none``: the real training clips;
- ``generic``: plus ``copies`` speed-perturbed copies (rate 0.9 / 1.1, Ko et al. 2015) with SpecAugment masks
  (Park et al. 2019);
- ``global``: plus ``copies`` copies with the profile's perturbations applied to whole clips (the control for
  targeting: same perturbations, no segment selection);
- ``targeted``: plus ``copies`` copies perturbed by the targeting profile (its sounds only);
- ``learned``: plus the learned augmenter's synthetic clips (the run's synthetic set).
Mean and 95% interval over seeds, the paired effect of each setting against ``none``, and per-class accuracy on
the profile's ``focus_labels`` (the words the team reports failing).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from evaluation.image_features import classification_scores, fit_small_cnn, predict, resolve_device
from evaluation.stats import checked_seeds, classifier_settings, fmt, mean_ci, paired_effect
from scarce.errors import ConfigError, DataError, check_range
from speech.audio import LABELS_CSV, AudioSet, fix_length, read_audio
from speech.media import log_audio, spectrogram_image, write_wav
from speech.mel import LogMel, spec_augment
from speech.perturb import resample_rate
from speech.targeting import TargetedAugmenter, load_profile

log = logging.getLogger(__name__)
SETTINGS = {"none": "no augmentation", "generic": "generic (speed + SpecAugment)",
            "global": "profile on whole clips (untargeted)", "targeted": "targeted (profile)",
            "learned": "learned augmenter (CVAE)"}
GROUPS = {"typical": "test", "atypical": "atypical"}
CLASSIFIER_DEFAULTS = {"width": 24, "steps": 300, "lr": 2e-3, "batch_size": 32}  # as configs/evaluation/speech.yaml
GENERIC_RATES = (0.9, 1.1)


class SpeechEvaluation:
    """The four-setting protocol above. profile: a targeting profile (path or mapping); copies: augmented copies
    of each training clip per augmenting setting; examples: clips written as WAV (original / generic / targeted /
    learned) with a spectrogram image, and logged to W&B when a run is active."""

    def __init__(self, profile: Any, classifier: dict | None = None, seeds: list[int] | tuple[int, ...] = (0, 1, 2),
                 copies: int = 2, max_synthetic: int | None = None, examples: int = 3, n_mels: int = 40,
                 hop: int = 320, device: str = "auto", progress: bool = True):
        self.classifier = classifier_settings(classifier, CLASSIFIER_DEFAULTS)
        self.profile = load_profile(profile, "evaluation.profile")
        self.seeds = checked_seeds(seeds)
        self.copies = check_range("evaluation.copies", copies, 1, integer=True)
        self.max_synthetic = check_range("evaluation.max_synthetic", max_synthetic, 1, integer=True, allow_none=True)
        self.examples = check_range("evaluation.examples", examples, 0, integer=True)
        self.n_mels, self.hop = n_mels, hop
        self.device = resolve_device(device)
        self.progress = progress

    # ------------------------------------------------------------------ the evaluator protocol train.py uses
    def check(self, datamodule) -> None:
        """The profile's focus labels must be classes of the data."""
        datamodule.setup("fit")
        missing = [c for c in self.profile.focus_labels if c not in datamodule.classes]
        if missing:
            raise ConfigError(f"evaluation.profile.focus_labels: {missing} are not classes of the data; classes: "
                              f"{list(datamodule.classes)}")

    def evaluate(self, datamodule, synthetic: str | Path | AudioSet | None, out_dir: str | Path) -> dict:
        datamodule.setup("fit")
        self.check(datamodule)
        syn = None if synthetic is None else read_synthetic(datamodule, synthetic)
        return self.run(datamodule.real("train"), {g: datamodule.real(s) for g, s in GROUPS.items()}, syn,
                        Path(out_dir), datamodule.describe())

    @staticmethod
    def to_markdown(report: dict) -> str:
        return to_markdown(report)

    @staticmethod
    def flat_metrics(report: dict) -> dict[str, float]:
        return flat_metrics(report)

    @staticmethod
    def utility_table(report: dict) -> pd.DataFrame:
        return pd.DataFrame(utility_rows(report), columns=["trained on", *[f"{g} accuracy" for g in GROUPS],
                                                          "focus classes (atypical)"])

    # ------------------------------------------------------------------------------------------------- run
    def run(self, train: AudioSet, tests: dict[str, AudioSet], synthetic: AudioSet | None, out_dir: Path,
            data_description: str = "") -> dict:
        t0 = time.perf_counter()
        for name, s in {"train": train, **tests}.items():
            if len(s) == 0:
                raise DataError(f"the {name} split holds no clips; hold out speakers for it")
        classes, sr = list(train.classes), train.sample_rate
        if len(classes) < 2:
            raise DataError(f"classes={classes}: classification needs at least 2 classes")
        mel = LogMel(sr, hop=self.hop, n_mels=self.n_mels)
        train_x = torch.from_numpy(train.waves)
        base_mel = mel(train_x)
        mean, std = float(base_mel.mean()), float(base_mel.std())
        norm = lambda m: ((m - mean) / std)[:, None]  # noqa: E731 - (N, 1, n_mels, frames)
        test_feats = {g: norm(mel(torch.from_numpy(s.waves))) for g, s in tests.items()}
        test_labels = {g: torch.from_numpy(s.labels) for g, s in tests.items()}
        focus = [classes.index(c) for c in self.profile.focus_labels]
        y = torch.from_numpy(train.labels)
        settings = [s for s in SETTINGS if s != "learned" or synthetic is not None]
        if synthetic is not None and self.max_synthetic and len(synthetic) > self.max_synthetic:
            keep = np.random.default_rng(0).permutation(len(synthetic))[: self.max_synthetic]
            synthetic = synthetic.subset(np.sort(keep))
        runs: dict[str, list[dict]] = {s: [] for s in settings}
        augmenters = {"targeted": TargetedAugmenter(self.profile, sr),
                      "global": TargetedAugmenter(self.profile.as_global(), sr)}
        example_waves: dict[str, Any] = {}
        fit_acc: list[float] = []
        for seed in self.seeds:
            g = torch.Generator().manual_seed(seed)
            for setting in settings:
                feats, labels, extra = self._training_set(setting, train_x, y, synthetic, augmenters, g, mel, norm)
                if seed == self.seeds[0] and extra is not None:
                    example_waves[setting] = extra
                model = fit_small_cnn(feats, labels, len(classes), seed=seed, device=self.device,
                                      **{k: self.classifier[k] for k in ("width", "steps", "lr", "batch_size")})
                scores = {grp: classification_scores(predict(model, test_feats[grp]), test_labels[grp], len(classes))
                          for grp in tests}
                all_logits = torch.cat([predict(model, test_feats[grp]) for grp in tests])
                scores["all"] = classification_scores(all_logits, torch.cat(list(test_labels.values())), len(classes))
                runs[setting].append(scores)
                if setting == "none":  # does the classifier fit its own clips? (held-out near chance + this high
                    # = the voices do not share the task, and no setting can show an effect)
                    fit_acc.append(classification_scores(predict(model, feats), labels, len(classes))["accuracy"])
            log.info("speech TSTR seed %d done (%.0f s)", seed, time.perf_counter() - t0)
        utility = summarise(runs, classes, focus)
        examples = self._examples(train, example_waves, mel, out_dir)
        return {
            "meta": {"domain": "speech", "task": "phrase classification", "classes": classes,
                     "sample_rate": sr, "num_samples": int(train.waves.shape[1]), "data": data_description,
                     "rows": {"real_train": len(train), **{f"real_{g}": len(s) for g, s in tests.items()},
                              "synthetic": 0 if synthetic is None else len(synthetic)},
                     "speakers": {"train": sorted(set(map(str, train.speakers))),
                                  **{g: sorted(set(map(str, s.speakers))) for g, s in tests.items()}},
                     "chance": 1.0 / len(classes),
                     "train_accuracy_none": mean_ci(fit_acc, bounds=(0.0, 1.0)),
                     "seeds": self.seeds, "copies": self.copies, "classifier": dict(self.classifier),
                     "profile": self.profile.to_dict(), "focus_labels": list(self.profile.focus_labels),
                     "seconds": round(time.perf_counter() - t0, 1)},
            "utility": utility,
            "fidelity": fidelity(base_mel, mel, tests, synthetic),
            "quality": quality(synthetic),
            "examples": examples,
        }

    def _training_set(self, setting: str, x: torch.Tensor, y: torch.Tensor, synthetic: AudioSet | None,
                      augmenters: dict[str, TargetedAugmenter], g: torch.Generator, mel: LogMel, norm
                      ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(features, labels, the first augmented waveforms for the examples) of one setting."""
        real = norm(mel(x))
        if setting == "none":
            return real, y, None
        if setting == "learned":
            sx = torch.from_numpy(synthetic.waves)
            return torch.cat([real, norm(mel(sx))]), torch.cat([y, torch.from_numpy(synthetic.labels)]), synthetic
        copies = []
        for _ in range(self.copies):
            if setting == "generic":
                rate = GENERIC_RATES[int(torch.randint(len(GENERIC_RATES), (1,), generator=g))]
                w = _fit_center(resample_rate(x, rate), x.shape[1])
            else:
                w = augmenters[setting].batch(x, g)
            copies.append(w)
        waves = torch.cat(copies)
        feats = norm(mel(waves))
        if setting == "generic":
            feats = spec_augment(feats[:, 0], g)[:, None]
        return torch.cat([real, feats]), torch.cat([y] + [y] * self.copies), copies[0].numpy()

    def _examples(self, train: AudioSet, waves: dict[str, Any], mel: LogMel, out_dir: Path) -> dict:
        """WAV files and one spectrogram image per example clip: original vs each augmentation."""
        out: dict[str, Any] = {"folder": None, "files": []}
        if not self.examples:
            return out
        folder = out_dir / "examples"
        folder.mkdir(parents=True, exist_ok=True)
        out["folder"] = str(folder)
        sr = train.sample_rate
        for i in range(min(self.examples, len(train))):
            label = train.classes[int(train.labels[i])]
            clips = {"original": train.waves[i]}
            for setting in ("generic", "global", "targeted"):
                if setting in waves:
                    clips[setting] = waves[setting][i]
            syn = waves.get("learned")
            if syn is not None and (syn.labels == train.labels[i]).any():  # a synthetic clip of the same label
                clips["learned"] = syn.waves[int(np.flatnonzero(syn.labels == train.labels[i])[0])]
            paths = [str(write_wav(folder / f"{i:02d}_{label}_{k}.wav", w, sr)) for k, w in clips.items()]
            img = spectrogram_image([mel(torch.from_numpy(np.asarray(w))[None])[0] for w in clips.values()])
            from PIL import Image

            png = folder / f"{i:02d}_{label}_spectrograms.png"
            Image.fromarray(img).save(png)
            log_audio(f"examples/{i:02d}_{label}", list(clips.values()), sr, list(clips), img)
            out["files"].append({"label": label, "wav": paths, "spectrograms": str(png)})
        return out


def _fit_center(w: torch.Tensor, n: int) -> torch.Tensor:
    if w.shape[1] >= n:
        a = (w.shape[1] - n) // 2
        return w[:, a:a + n]
    return torch.nn.functional.pad(w, (0, n - w.shape[1]))


def read_synthetic(datamodule, synthetic: str | Path | AudioSet) -> AudioSet:
    """A synthetic audio folder (``labels.csv`` + WAVs, as written by write_audio_set) or an AudioSet, on the real
    data's classes, rate and length."""
    if isinstance(synthetic, AudioSet):
        data = synthetic
    else:
        path = Path(synthetic)
        table = path / LABELS_CSV
        if not table.is_file():
            raise DataError(f"synthetic={str(path)!r}: no {LABELS_CSV} (expected a folder written by generate)")
        df = pd.read_csv(table)
        unknown = sorted(set(df["label"].astype(str)) - set(datamodule.classes))
        if unknown:
            raise DataError(f"synthetic={str(path)!r} has labels {unknown} that are not classes of the real data")
        sr, n = datamodule.sample_rate, datamodule.num_samples
        waves = np.stack([fix_length(read_audio(path / f, sr), n) for f in df["file"]])
        labels = np.asarray([datamodule.classes.index(c) for c in df["label"].astype(str)], np.int64)
        speakers = df["speaker"].astype(str).to_numpy() if "speaker" in df else np.full(len(df), "synthetic")
        data = AudioSet(waves.astype(np.float32), labels, list(datamodule.classes), speakers, sr, source=str(path))
    if list(data.classes) != list(datamodule.classes):
        raise DataError(f"synthetic clips have classes {data.classes[:5]}... but the real data "
                        f"{datamodule.classes[:5]}...")
    if data.waves.shape[1] != datamodule.num_samples or data.sample_rate != datamodule.sample_rate:
        raise DataError(f"synthetic clips are {data.waves.shape[1]} samples at {data.sample_rate} Hz; the real "
                        f"data {datamodule.num_samples} at {datamodule.sample_rate} Hz")
    return data


def summarise(runs: dict[str, list[dict]], classes: list[str], focus: list[int]) -> dict:
    """mean_ci per setting and group, per-class accuracy on the focus classes, paired effects against ``none``."""
    out: dict[str, Any] = {"headline": "accuracy", "settings": {}, "effects": {}}
    groups = list(runs["none"][0])
    for setting, scores in runs.items():
        rec = {}
        for grp in groups:
            r = {k: mean_ci([s[grp][k] for s in scores], bounds=(0.0, 1.0)) for k in ("accuracy", "balanced_accuracy")}
            per = [[s[grp]["per_class"][k] for s in scores] for k in focus]
            r["focus_accuracy"] = mean_ci([float(np.mean([p[i] for p in per if p[i] is not None]))
                                           for i in range(len(scores))] if focus else [], bounds=(0.0, 1.0))
            r["per_class"] = {classes[k]: mean_ci(v, bounds=(0.0, 1.0)) for k, v in zip(focus, per)
                              if v[0] is not None}
            rec[grp] = r
        out["settings"][setting] = rec
    for setting in runs:
        if setting == "none":
            continue
        out["effects"][setting] = {
            grp: {m: paired_effect([s[grp][m] for s in runs["none"]], [s[grp][m] for s in runs[setting]])
                  for m in ("accuracy",)} for grp in groups}
        if focus:
            for grp in groups:
                base = [np.mean([s[grp]["per_class"][k] for k in focus if s[grp]["per_class"][k] is not None])
                        for s in runs["none"]]
                var = [np.mean([s[grp]["per_class"][k] for k in focus if s[grp]["per_class"][k] is not None])
                       for s in runs[setting]]
                out["effects"][setting][grp]["focus_accuracy"] = paired_effect(base, var)
    return out


def fidelity(train_mel: torch.Tensor, mel: LogMel, tests: dict[str, AudioSet], synthetic: AudioSet | None
             ) -> dict:
    """Mean absolute difference of per-band mean log-mel (nats): synthetic vs real train, and real test groups vs
    real train for reference."""
    ref = train_mel.mean(dim=(0, 2))
    out = {g: float((mel(torch.from_numpy(s.waves)).mean(dim=(0, 2)) - ref).abs().mean()) for g, s in tests.items()}
    res = {f"band_mean_gap_{g}_vs_train": v for g, v in out.items()}
    if synthetic is not None:
        res["band_mean_gap_synthetic_vs_train"] = float((mel(torch.from_numpy(synthetic.waves)).mean(dim=(0, 2))
                                                        - ref).abs().mean())
    return res


def quality(synthetic: AudioSet | None) -> dict:
    """Non-finite samples, silent clips, clipped share and class counts of the synthetic clips."""
    if synthetic is None:
        return {"clips": 0}
    w = synthetic.waves
    counts = np.bincount(synthetic.labels, minlength=len(synthetic.classes))
    return {"clips": int(len(w)), "nonfinite_values": int((~np.isfinite(w)).sum()),
            "silent_clips": int((np.abs(w).max(1) < 1e-4).sum()), "clipped_share": float((np.abs(w) >= 0.999).mean()),
            "classes_missing": [c for c, k in zip(synthetic.classes, counts) if k == 0]}


# ----------------------------------------------------------------------------------------------- reporting
def utility_rows(report: dict) -> list[list[str]]:
    u = report["utility"]["settings"]
    return [[SETTINGS[s], *[fmt(u[s][g]["accuracy"]) for g in GROUPS], fmt(u[s]["atypical"]["focus_accuracy"])]
            for s in SETTINGS if s in u]


def to_markdown(report: dict) -> str:
    meta, util = report["meta"], report["utility"]
    n = meta["rows"]
    lines = [
        f"# Evaluation: speech {meta['task']} ({len(meta['classes'])} classes)",
        "",
        f"{meta['data']}",
        "",
        f"Trained on {n['real_train']} real clips of {len(meta['speakers']['train'])} speakers; tested on held-out "
        f"speakers: typical {meta['speakers']['typical']} ({n['real_typical']} clips), atypical "
        f"{meta['speakers']['atypical']} ({n['real_atypical']} clips). {len(meta['seeds'])} seeds x "
        f"{meta['classifier']['steps']} steps per fit; {meta['copies']} augmented copies per clip; "
        "mean [95% interval].",
        "",
        f"Chance = 1/{len(meta['classes'])} = {meta['chance']:.3f}. Without augmentation the classifier fits its own "
        f"training clips to accuracy {fmt(meta['train_accuracy_none'])}: if that is high while held-out accuracy "
        "sits near chance, the voices do not share the task and no setting can show an effect; if it is low, the "
        "classifier is undertrained (more evaluation.classifier.steps).",
        "",
        "| trained on | typical accuracy | atypical accuracy | focus classes (atypical) |",
        "|---|---|---|---|",
        *[f"| {' | '.join(r)} |" for r in utility_rows(report)],
        "",
        f"Focus classes (profile `{meta['profile']['name']}`): {', '.join(meta['focus_labels']) or 'none'}.",
        "",
        "Paired effect against no augmentation (accuracy):",
        "",
    ]
    for setting, eff in util["effects"].items():
        parts = [f"{g} {fmt(eff[g]['accuracy'], 3)} ({eff[g]['accuracy']['verdict']})" for g in GROUPS]
        if "focus_accuracy" in eff["atypical"]:
            fa = eff["atypical"]["focus_accuracy"]
            parts.append(f"focus/atypical {fmt(fa, 3)} ({fa['verdict']})")
        lines.append(f"- {SETTINGS[setting]}: " + "; ".join(parts))
    lines += ["", "## Fidelity and quality", ""]
    lines += [f"- {k}: {v:.3f}" for k, v in report["fidelity"].items()]
    lines += [f"- synthetic {k}: {v}" for k, v in report["quality"].items()]
    ex = report.get("examples") or {}
    if ex.get("folder"):
        lines += ["", f"Listen: {ex['folder']} (original / generic / global / targeted / learned WAVs + spectrogram PNGs)"]
    return "\n".join(lines) + "\n"


def flat_metrics(report: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for setting, rec in report["utility"]["settings"].items():
        for grp, r in rec.items():
            for k in ("accuracy", "balanced_accuracy", "focus_accuracy"):
                if r[k]["mean"] is not None:
                    out[f"eval/{setting}/{grp}/{k}"] = r[k]["mean"]
    for setting, eff in report["utility"]["effects"].items():
        for grp, e in eff.items():
            if e["accuracy"]["mean"] is not None:
                out[f"eval/effect/{setting}/{grp}/accuracy"] = e["accuracy"]["mean"]
    return out
