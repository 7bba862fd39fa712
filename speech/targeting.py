"""Targeting profiles: which sounds fail, which perturbations to apply to them, how severe; and the augmenter that
applies a profile to a batch, to target segments only (or to whole clips in global mode).

Profile YAML (configs/augment/*.yaml)::

    name: obstruents
    mode: targeted          # targeted | global (global applies every perturbation to whole clips)
    segments: detector      # detector (built-in acoustic detector) | alignment (TextGrid / CTM per clip)
    focus_labels: [Stupid]  # words / phrases the team reports failing: per-class accuracy is reported for them
    perturbations:
      - {name: imprecise_consonants, severity: [0.4, 0.9], targets: [obstruent]}
      - {name: prolong, severity: 0.5, targets: [vowel], probability: 0.5}
      - {name: tempo, severity: [0.1, 0.3]}   # no targets: the whole clip

``severity`` is a number or a [low, high] range drawn uniformly per clip (per batch for length-changing ones);
``targets`` are phonetic classes (speech.alignment.CLASSES) or phone labels; ``params`` go to the perturbation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from scarce.errors import ConfigError, DataError, check_choice, check_range
from speech.alignment import DetectorConfig, Segment, check_targets, detect_segments, matches, target_mask
from speech.perturb import LENGTH_CHANGING, PERTURBATIONS, check_batch

MODES = ("targeted", "global")
SEGMENT_SOURCES = ("detector", "alignment")
RAMP_MS = 4.0  # raised-cosine fade inside a target segment, so its edges do not click


@dataclass
class PerturbationSpec:
    """One perturbation of a profile: severity range, targets ([] = whole clip), probability per clip, params."""

    name: str
    severity: tuple[float, float]
    targets: list[str] = field(default_factory=list)
    probability: float = 1.0
    params: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, key: str) -> PerturbationSpec:
        if not isinstance(d, dict):
            raise ConfigError(f"{key}={d!r} is not allowed; expected a mapping with name and severity")
        unknown = sorted(set(d) - {"name", "severity", "targets", "probability", "params"})
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]} is not a field; expected some of "
                              "['name', 'params', 'probability', 'severity', 'targets']")
        name = check_choice(f"{key}.name", d.get("name"), PERTURBATIONS)
        sev = d.get("severity", 0.5)
        lo, hi = (sev, sev) if not isinstance(sev, (list, tuple)) else (tuple(sev) + (None,))[:2]
        if isinstance(sev, (list, tuple)) and len(sev) != 2:
            raise ConfigError(f"{key}.severity={sev!r} is not allowed; expected a number or [low, high]")
        check_range(f"{key}.severity", lo, 0.0, 1.0)
        check_range(f"{key}.severity", hi, lo, 1.0)
        targets = check_targets(f"{key}.targets", list(d.get("targets") or []))
        prob = check_range(f"{key}.probability", d.get("probability", 1.0), 0.0, 1.0)
        params = d.get("params") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{key}.params={params!r} is not allowed; expected a mapping")
        return cls(name, (float(lo), float(hi)), targets, float(prob), dict(params))


@dataclass
class Profile:
    """A targeting profile (see the module docstring for the YAML)."""

    name: str
    perturbations: list[PerturbationSpec]
    mode: str = "targeted"
    segments: str = "detector"
    focus_labels: list[str] = field(default_factory=list)
    description: str = ""

    @classmethod
    def from_dict(cls, d: Any, key: str = "profile") -> Profile:
        if not isinstance(d, dict):
            raise ConfigError(f"{key}={d!r} is not allowed; expected a mapping (see speech/targeting.py)")
        unknown = sorted(set(d) - {"name", "perturbations", "mode", "segments", "focus_labels", "description"})
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]} is not a field; expected some of ['description', 'focus_labels', "
                              "'mode', 'name', 'perturbations', 'segments']")
        specs = d.get("perturbations")
        if not isinstance(specs, list) or not specs:
            raise ConfigError(f"{key}.perturbations={specs!r} is not allowed; expected a non-empty list")
        return cls(
            name=str(d.get("name", "profile")),
            perturbations=[PerturbationSpec.from_dict(s, f"{key}.perturbations[{i}]") for i, s in enumerate(specs)],
            mode=check_choice(f"{key}.mode", d.get("mode", "targeted"), MODES),
            segments=check_choice(f"{key}.segments", d.get("segments", "detector"), SEGMENT_SOURCES),
            focus_labels=[str(x) for x in (d.get("focus_labels") or [])],
            description=str(d.get("description", "")),
        )

    def as_global(self) -> Profile:
        """The same perturbations applied to whole clips (the untargeted comparison)."""
        return Profile(self.name + "_global", self.perturbations, "global", self.segments, self.focus_labels,
                       self.description)

    def to_dict(self) -> dict:
        return {"name": self.name, "mode": self.mode, "segments": self.segments, "focus_labels": self.focus_labels,
                "description": self.description,
                "perturbations": [{"name": p.name, "severity": list(p.severity), "targets": p.targets,
                                   "probability": p.probability, "params": p.params} for p in self.perturbations]}


def load_profile(profile: str | Path | dict | Profile, key: str = "profile") -> Profile:
    """A Profile from a YAML path, a mapping (a Hydra node) or a Profile."""
    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, dict):
        return Profile.from_dict(profile, key)
    p = Path(profile)
    if not p.is_file():
        raise ConfigError(f"{key}={str(profile)!r}: no such profile file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{key}={str(profile)!r} is not valid YAML: {e}") from e
    return Profile.from_dict(data, key)


class TargetedAugmenter:
    """Applies a profile to (B, T) batches: each perturbation to its target segments only (samples outside them
    stay exactly as they were), or to whole clips in global mode / for perturbations without targets.

    segments: per clip, from alignments (``segments=`` in ``__call__``) or the built-in detector (run on the clip
    as it is when each perturbation is applied, so later perturbations see segments moved by earlier ones).
    """

    def __init__(self, profile: str | Path | dict | Profile, sample_rate: int,
                 detector: DetectorConfig = DetectorConfig()):
        self.profile = load_profile(profile)
        self.sample_rate = sample_rate
        self.detector = detector

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None,
                 segments: list[list[Segment]] | None = None) -> list[torch.Tensor]:
        """(B, T) -> B perturbed clips (lengths may differ when a length-changing perturbation ran)."""
        x = check_batch(x)
        if self.profile.segments == "alignment" and self.profile.mode == "targeted" and segments is None:
            raise DataError(f"profile {self.profile.name!r} has segments: alignment, but no alignments were given "
                            "for this batch (pass segments=, or use segments: detector)")
        if segments is not None and len(segments) != len(x):
            raise DataError(f"{len(segments)} alignments for a batch of {len(x)} clips")
        clips = list(x)
        segs = segments
        for spec in self.profile.perturbations:
            targeted = self.profile.mode == "targeted" and bool(spec.targets)
            if targeted and segs is None:
                segs = self._detect(clips)
            clips, segs = self._apply(spec, clips, segs if targeted else None, generator)
            if self.profile.segments == "detector":
                segs = None  # re-detect on the changed audio next time
        return clips

    def batch(self, x: torch.Tensor, generator: torch.Generator | None = None,
              segments: list[list[Segment]] | None = None) -> torch.Tensor:
        """Like ``__call__``, each clip cropped (centred) or zero-padded back to T samples: (B, T)."""
        n = x.shape[-1]
        out = []
        for c in self(x, generator, segments):
            if len(c) >= n:
                start = (len(c) - n) // 2
                out.append(c[start:start + n])
            else:
                out.append(torch.nn.functional.pad(c, (0, n - len(c))))
        return torch.stack(out)

    # ------------------------------------------------------------------------------------------------ parts
    def _detect(self, clips: list[torch.Tensor]) -> list[list[Segment]]:
        if len({len(c) for c in clips}) == 1:
            return detect_segments(torch.stack(clips), self.sample_rate, self.detector)
        return [detect_segments(c[None], self.sample_rate, self.detector)[0] for c in clips]

    def _draw(self, spec: PerturbationSpec, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """(n,) severities: uniform in the range, 0 where the clip is skipped (probability)."""
        lo, hi = spec.severity
        u = torch.rand(n, generator=generator)
        keep = torch.rand(n, generator=generator) < spec.probability
        return torch.where(keep, lo + (hi - lo) * u, torch.zeros(()))

    def _apply(self, spec: PerturbationSpec, clips: list[torch.Tensor], segs: list[list[Segment]] | None,
               generator: torch.Generator | None) -> tuple[list[torch.Tensor], list[list[Segment]] | None]:
        fn = PERTURBATIONS[spec.name]
        sr = self.sample_rate
        sev = self._draw(spec, len(clips), generator)
        if spec.name in LENGTH_CHANGING:
            return self._apply_length(spec, clips, segs, sev, generator)
        same = len({len(c) for c in clips}) == 1
        if same:
            x = torch.stack(clips)
            y = fn(x, sr, sev.to(x.device), generator=generator, **spec.params)
            outs = list(y)
        else:
            outs = [fn(c[None], sr, sev[i:i + 1].to(c.device), generator=generator, **spec.params)[0]
                    for i, c in enumerate(clips)]
        if segs is None:
            return outs, segs
        targets = set(spec.targets)
        mixed = []
        for c, y, s in zip(clips, outs, segs):
            w = _ramped(target_mask(s, targets, len(c), sr), round(RAMP_MS / 1000 * sr)).to(c.device)
            mixed.append(torch.where(w > 0, w * y + (1 - w) * c, c))  # outside targets: the input, exactly
        return mixed, segs

    def _apply_length(self, spec: PerturbationSpec, clips: list[torch.Tensor], segs: list[list[Segment]] | None,
                      sev: torch.Tensor, generator: torch.Generator | None
                      ) -> tuple[list[torch.Tensor], list[list[Segment]] | None]:
        """Length-changing perturbations: whole clips, or each target segment cut out, changed and put back
        (``pauses`` inserts its silence before each target segment); segment times are moved to match."""
        fn = PERTURBATIONS[spec.name]
        sr = self.sample_rate
        out_clips, out_segs = [], [] if segs is not None else None
        for i, c in enumerate(clips):
            s = float(sev[i])
            if segs is None:
                out_clips.append(fn(c[None], sr, s, generator=generator, **spec.params)[0] if s > 0 else c)
                continue
            pieces, new_segs, t = [], [], 0
            clip_segs = sorted(segs[i], key=lambda z: z.start)
            # pieces tile the whole clip: each runs from its segment's start to the next one's (gaps between
            # alignment segments stay with the segment before them, unchanged unless it is a target)
            cuts = [0] + [min(max(round(z.start * sr), 0), len(c)) for z in clip_segs[1:]] + [len(c)]
            cuts = list(itertools.accumulate(cuts, max))  # overlapping alignments: no sample is used twice
            for j, seg in enumerate(clip_segs):
                a, b = cuts[j], cuts[j + 1]
                piece = c[a:b]
                nb = (clip_segs[j - 1] if j else None, clip_segs[j + 1] if j + 1 < len(clip_segs) else None)
                if s > 0 and len(piece) and matches(seg, set(spec.targets), nb):
                    if spec.name == "pauses":
                        gap = round(s * spec.params.get("max_pause_s", 0.3) * sr)
                        pieces.append(torch.zeros(gap, dtype=c.dtype, device=c.device))
                        new_segs.append(Segment(t / sr, (t + gap) / sr, "pau", "silence"))
                        t += gap
                    else:
                        piece = fn(piece[None], sr, s, generator=generator, **spec.params)[0]
                pieces.append(piece)
                new_segs.append(Segment(t / sr, (t + len(piece)) / sr, seg.label, seg.cls))
                t += len(piece)
            out_clips.append(torch.cat(pieces) if pieces else c)
            out_segs.append(new_segs)
        return out_clips, out_segs


def _ramped(mask: torch.Tensor, ramp: int) -> torch.Tensor:
    """(T,) bool -> (T,) float weight: 1 inside each True run, rising/falling over ``ramp`` samples at its inner
    edges, 0 outside (the fade stays inside the run, so samples outside it keep weight 0)."""
    w = mask.float()
    if ramp < 2 or not mask.any():
        return w
    # distance (in samples) to the nearest False, capped at ramp: a box filter of the mask from both sides
    kernel = torch.ones(1, 1, 2 * ramp + 1)
    count = torch.nn.functional.conv1d(torch.nn.functional.pad(w, (ramp, ramp))[None, None], kernel)[0, 0]
    frac = ((count - ramp) / (ramp + 1)).clamp(0, 1)  # 1/(ramp+1) at a run's first sample, 1 after ramp samples
    return torch.where(mask, 0.5 - 0.5 * torch.cos(torch.pi * frac), torch.zeros(()))
