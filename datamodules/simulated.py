"""Datamodules whose batches are simulated on the device: MRI slices from real anatomy, DRRs from a real CT.

The loaders yield only a batch number; :meth:`on_after_batch_transfer` (after Lightning has moved the batch to the
device) draws the protocol and runs the simulator there. The seed of a batch is a hash of (seed, stage, epoch,
rank, batch number): a fixed seed gives the same batches, every epoch of training sees new ones (endless data),
validation and test batches are the same every epoch, and DDP ranks draw different batches.

Batch keys are those of :mod:`datamodules.image_set` (IMAGE, COND, PARAMS; images in [-1, 1], (B, 1, S, S)),
plus MASK: the (B, S, S) int64 label map that comes free with the simulation.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.image_set import COND, IMAGE, PARAMS
from physics import mri
from physics.anatomy import SliceStack, mni_slices
from physics.phantoms import INVESALIUS, downsample, load_invesalius
from physics.xray import DRR, METHODS, Detector, Pose, kramers_spectrum
from scarce.errors import ConfigError, check_choice, check_range

log = logging.getLogger(__name__)
MASK = "mask"  # (B, H, W) int64 label map of a simulated batch
STAGES = {"train": 0, "val": 1, "test": 2}
MRI_TARGETS = ("simulated", "real")
TASKS = ("generate", "segment")  # what model_kwargs describe: an image generator's inputs, or a segmenter's


def batch_seed(seed: int, stage: str, epoch: int, rank: int, index: int) -> int:
    """A 63-bit seed per batch, different for every (seed, stage, epoch, rank, index)."""
    ss = np.random.SeedSequence([seed, STAGES[stage], epoch, rank, index])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


class BatchNumbers(Dataset):
    """n items, each the dict {"index": i}; the simulation happens after transfer to the device."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"index": torch.tensor(i)}


def uniform(g: torch.Generator, lo_hi, n: int, device) -> torch.Tensor:
    """(n,) uniform draws in [lo, hi] on ``device``."""
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def to_unit(x: torch.Tensor, q: float = 0.995) -> torch.Tensor:
    """(B, ...) magnitudes -> [-1, 1], each image scaled by its ``q`` quantile (robust to noise spikes)."""
    flat = x.flatten(1)
    hi = torch.quantile(flat.float(), q, dim=1).clamp_min(1e-8)
    return ((x / hi.view(-1, *([1] * (x.dim() - 1)))).clamp(0, 1) * 2 - 1).float()


def check_pair(key: str, v, low: float | None = None, high: float | None = None) -> tuple[float, float]:
    """A [lo, hi] range option."""
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ConfigError(f"{key}={v!r} is not allowed; expected [low, high]")
    for x in v:
        check_range(key, x, low, high)
    if v[0] > v[1]:
        raise ConfigError(f"{key}={list(v)} is not allowed; expected low <= high")
    return float(v[0]), float(v[1])


class SimulatedDataModule(L.LightningDataModule):
    """Shared loaders and seeding; subclasses implement :meth:`simulate` (seeded generator -> batch dict)."""

    unit = "images"

    def __init__(self, batch_size: int, train_batches: int, val_batches: int, test_batches: int, seed: int):
        super().__init__()
        self.batch_size = check_range("datamodule.batch_size", batch_size, 1, integer=True)
        self.n_batches = {"train": check_range("datamodule.train_batches", train_batches, 1, integer=True),
                          "val": check_range("datamodule.val_batches", val_batches, 1, integer=True),
                          "test": check_range("datamodule.test_batches", test_batches, 1, integer=True)}
        self.seed = check_range("datamodule.seed", seed, 0, integer=True)

    def _loader(self, stage: str) -> DataLoader:
        return DataLoader(BatchNumbers(self.n_batches[stage]), batch_size=None, shuffle=False, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def _stage(self) -> tuple[str, int, int]:
        """(stage, epoch, rank) of the running trainer (outside a trainer: train, epoch 0, rank 0)."""
        tr = getattr(self, "trainer", None)
        if tr is None:
            return "train", 0, 0
        stage = "train" if tr.training else "val" if (tr.validating or tr.sanity_checking) else "test"
        return stage, (tr.current_epoch if stage == "train" else 0), tr.global_rank

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> dict[str, torch.Tensor]:
        if not (isinstance(batch, dict) and set(batch) == {"index"}):
            return batch  # already a batch (e.g. handed in by a caller)
        stage, epoch, rank = self._stage()
        return self.batch(stage, int(batch["index"]), epoch, rank, batch["index"].device)

    def batch(self, stage: str, index: int, epoch: int = 0, rank: int = 0, device=None) -> dict[str, torch.Tensor]:
        """The simulated batch number ``index`` of ``stage`` (same arguments -> the same batch)."""
        device = torch.device(device or "cpu")
        g = torch.Generator(device=device).manual_seed(batch_seed(self.seed, stage, epoch, rank, index))
        return self.simulate(g, self.batch_size, device, stage)

    def simulate(self, g: torch.Generator, n: int, device, stage: str) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def train_size(self) -> int:
        return self.batch_size * self.n_batches["train"]


class SimulatedMRIDataModule(SimulatedDataModule):
    """MRI slices simulated from the MNI152 tissue maps with a randomised protocol per image.

    target "simulated": IMAGE = the simulated slice (the segmentation set-up; MASK = AAL classes);
    target "real": IMAGE = the real MNI152 T1 slice of the same anatomy and COND = the simulated slice (a
    sim -> real translator learns what the simulator misses). PARAMS: the protocol vector
    (:meth:`MRIProtocol.vector` + SNR / 100, acceleration / 8, motion mm / 5).
    Ranges: tr_ms, te_ms, ti_ms, flip_deg per sequence family; snr; acceleration (1 = fully sampled);
    motion_mm / motion_deg: per-shot std; bias: log-field strength; sequences: which families to draw.
    test_on_real: the test split is real Colin27 T1 slices with AAL labels (needs mricron-data).
    """

    def __init__(self, image_size: int = 64, n_slices: int = 24, z_range=(-30.0, 60.0), field_t: float = 3.0,
                 n_coils: int = 4, target: str = "simulated", sequences=("spin_echo", "gradient_echo",
                                                                         "inversion_recovery"),
                 snr=(10.0, 60.0), acceleration=(1.0, 2.0), motion_mm=(0.0, 1.0), motion_deg=(0.0, 1.0),
                 bias=(0.0, 0.2), test_on_real: bool = False, mni_root: str | None = None,
                 atlas_root: str | None = "/usr/share/mricron/templates", task: str = "generate",
                 batch_size: int = 16,
                 train_batches: int = 50, val_batches: int = 2, test_batches: int = 2, seed: int = 0):
        super().__init__(batch_size, train_batches, val_batches, test_batches, seed)
        self.image_size = check_range("datamodule.image_size", image_size, 8, integer=True)
        self.n_slices = check_range("datamodule.n_slices", n_slices, 1, integer=True)
        self.z_range = check_pair("datamodule.z_range", z_range)
        self.field_t = check_choice("datamodule.field_t", field_t, list(mri.RELAXATION))
        self.n_coils = check_range("datamodule.n_coils", n_coils, 1, integer=True)
        self.target = check_choice("datamodule.target", target, MRI_TARGETS)
        self.sequences = [mri.SEQUENCES.index(check_choice("datamodule.sequences", s, mri.SEQUENCES))
                          for s in sequences]
        if not self.sequences:
            raise ConfigError("datamodule.sequences=[] is not allowed; expected at least one of "
                              f"{list(mri.SEQUENCES)}")
        self.snr = check_pair("datamodule.snr", snr, 0.5)
        self.acceleration = check_pair("datamodule.acceleration", acceleration, 1.0)
        self.motion_mm = check_pair("datamodule.motion_mm", motion_mm, 0.0)
        self.motion_deg = check_pair("datamodule.motion_deg", motion_deg, 0.0)
        self.bias = check_pair("datamodule.bias", bias, 0.0)
        self.test_on_real = bool(test_on_real)
        self.task = check_choice("datamodule.task", task, TASKS)
        self.mni_root, self.atlas_root = mni_root, atlas_root
        self.stack: SliceStack | None = None
        self.scanner: mri.MRIScanner | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.stack is not None:
            return
        self.stack = mni_slices(self.image_size, 2, self.z_range, self.n_slices, self.mni_root, self.atlas_root)
        if self.test_on_real and self.stack.colin_t1 is None:
            raise ConfigError(f"datamodule.test_on_real=true needs the Colin27 T1 and AAL atlas in "
                              f"datamodule.atlas_root={self.atlas_root!r} (Debian: apt-get install mricron-data)")
        self.scanner = mri.MRIScanner(self.stack.fractions, self.stack.spacing_mm, self.field_t,
                                      mri.TISSUES[:3], self.n_coils)
        log.info("simulated MRI: %d MNI152 slices of %dx%d at %.2f mm, labels %s", self.n_slices, self.image_size,
                 self.image_size, self.stack.spacing_mm, "AAL" if self.stack.labels is not None else "tissue")

    @property
    def classes(self) -> list[str]:
        self.setup()
        return list(self.stack.classes) if self.stack.labels is not None else ["background", "csf", "gm", "wm"]

    def labels(self) -> torch.Tensor:
        """(N, S, S) label map per slice: AAL classes, or the dominant tissue when no atlas is installed."""
        st = self.stack
        if st.labels is not None:
            return st.labels
        dom = st.fractions.argmax(1) + 1
        return torch.where(st.fractions.sum(1) > 0.5, dom, torch.zeros_like(dom))

    def protocols(self, g: torch.Generator, n: int, device) -> mri.MRIProtocol:
        """n random protocols: a sequence family each, then TR/TE/TI/flip in that family's usual ranges."""
        seq = torch.tensor(self.sequences, device=device)[torch.randint(len(self.sequences), (n,), generator=g,
                                                                        device=device)]
        # (TR, TE, TI, flip) ranges: SE T1w-to-T2w, spoiled GRE T1w, IR from MPRAGE-like (short TI) to FLAIR-like
        ranges = {0: ((400, 4000), (10, 100), (0, 0), (90, 90)), 1: ((10, 40), (2, 8), (0, 0), (5, 40)),
                  2: ((2000, 9000), (3, 100), (600, 2600), (90, 90))}
        vals = torch.stack([torch.stack([uniform(g, r, n, device) for r in ranges[s]]) for s in range(3)])  # (3,4,n)
        pick = vals[seq, :, torch.arange(n, device=device)]  # (n, 4)
        return mri.MRIProtocol(seq, pick[:, 0], pick[:, 1], pick[:, 2], pick[:, 3])

    def simulate(self, g: torch.Generator, n: int, device, stage: str) -> dict[str, torch.Tensor]:
        self.setup()
        if stage == "test" and self.test_on_real:
            return self.real_batch(g, n, device)
        scanner = self.scanner.to(device)
        idx = torch.randint(self.n_slices, (n,), generator=g, device=device)
        p = self.protocols(g, n, device)
        snr = uniform(g, self.snr, n, device)
        acc = float(uniform(g, self.acceleration, 1, device))  # one mask per batch (k-space lines are shared)
        mm, deg, bias = (uniform(g, r, n, device) for r in (self.motion_mm, self.motion_deg, self.bias))
        out = scanner(idx, p, snr=snr, acceleration=acc, motion_deg=deg, motion_mm=mm, bias_strength=bias,
                      generator=g, return_kspace=False)
        sim = to_unit(out["image"])[:, None]
        params = torch.cat([p.vector(), torch.stack([snr / 100, torch.full_like(snr, acc / 8), mm / 5], 1)], 1)
        batch = {PARAMS: params, MASK: self.labels().to(device)[idx]}
        if self.target == "real":
            batch[IMAGE] = (self.stack.mni_t1.to(device)[idx] * 2 - 1)[:, None]
            batch[COND] = sim
        else:
            batch[IMAGE] = sim
        return batch

    def real_batch(self, g: torch.Generator, n: int, device) -> dict[str, torch.Tensor]:
        """Real Colin27 T1 slices with their AAL classes (every slice in turn, then repeats)."""
        idx = torch.arange(n, device=device) % self.n_slices
        return {IMAGE: (self.stack.colin_t1.to(device)[idx] * 2 - 1)[:, None], MASK: self.stack.labels.to(device)[idx]}

    def model_kwargs(self) -> dict[str, Any]:
        """A generator's sizes (task "generate": no class label; PARAMS and, for target "real", one COND channel)
        or a segmenter's (task "segment": input channels and the label-map classes)."""
        self.setup()
        if self.task == "segment":
            return {"in_channels": 1, "num_classes": len(self.classes), "classes": self.classes}
        return {"image_size": self.image_size, "channels": 1, "num_classes": 0, "num_params": 10,
                "cond_channels": 1 if self.target == "real" else 0}


class SimulatedXRayDataModule(SimulatedDataModule):
    """Radiographs simulated from a real head CT (InVesalius example, or any .inv3 path) at random poses/protocols.

    IMAGE: the realistic radiograph (polychromatic Kramers spectrum at kvp, Poisson noise at photons, scatter,
    blur), log-scaled to [-1, 1]; COND: the bone footprint (projected bone mask, mm / 50, to [-1, 1]); MASK: the
    footprint label map; PARAMS: (kvp / 150, log10 photons / 6, rotations / pi, scatter). The CT is block-averaged
    by ``ct_factor`` (4: 64 x 64 x 27 voxels of 3.8 x 3.8 x 6 mm) to keep CPU runs small. method / n_samples: the
    DRR projector (:class:`physics.xray.DRR`; n_samples counts only for "trilinear").
    """

    def __init__(self, path: str = str(INVESALIUS), image_size: int = 64, ct_factor: int = 4, n_samples: int = 96,
                 method: str = "joseph",
                 sdd_mm: float = 1000.0, sod_mm: float = 700.0, kvp=(60.0, 120.0), photons=(1e3, 1e5),
                 rotation_deg=(-30.0, 30.0), tilt_deg=(-5.0, 5.0), scatter=(0.0, 0.3), blur_mm=1.0,
                 batch_size: int = 16, train_batches: int = 50, val_batches: int = 2, test_batches: int = 2,
                 seed: int = 0):
        super().__init__(batch_size, train_batches, val_batches, test_batches, seed)
        self.path = path
        self.image_size = check_range("datamodule.image_size", image_size, 8, integer=True)
        self.ct_factor = check_range("datamodule.ct_factor", ct_factor, 1, integer=True)
        self.n_samples = check_range("datamodule.n_samples", n_samples, 2, integer=True)
        self.method = check_choice("datamodule.method", method, METHODS)
        self.sdd_mm, self.sod_mm = float(sdd_mm), float(sod_mm)
        self.kvp = check_pair("datamodule.kvp", kvp, 20.0, 150.0)
        self.photons = check_pair("datamodule.photons", photons, 1.0)
        self.rotation_deg = check_pair("datamodule.rotation_deg", rotation_deg, -180.0, 180.0)
        self.tilt_deg = check_pair("datamodule.tilt_deg", tilt_deg, -90.0, 90.0)
        self.scatter = check_pair("datamodule.scatter", scatter, 0.0)
        self.blur_mm = check_range("datamodule.blur_mm", blur_mm, 0.0)
        self.drr: DRR | None = None

    classes = ["background", "bone"]

    def setup(self, stage: str | None = None) -> None:
        if self.drr is not None:
            return
        ct = load_invesalius(self.path)
        hu = downsample(ct["hu"].data, self.ct_factor)
        bone = downsample(ct["masks"][0].astype(np.float32), self.ct_factor) > 0.5 if ct["masks"] else hu > 300
        spacing = tuple(s * self.ct_factor for s in ct["hu"].spacing_mm)
        extent = max(n * s for n, s in zip(hu.shape, spacing))
        # the detector covers the magnified head: pixel = extent x (sdd / sod) / size, with a 10% margin
        pixel = 1.1 * extent * self.sdd_mm / self.sod_mm / self.image_size
        det = Detector(self.sdd_mm, self.sod_mm, self.image_size, self.image_size, pixel)
        self.drr = DRR(torch.from_numpy(hu), spacing, det, self.n_samples, labels=torch.from_numpy(bone).long(),
                       method=self.method)
        log.info("simulated X-ray: CT %s at %s mm, detector %dx%d at %.2f mm", hu.shape, spacing, self.image_size,
                 self.image_size, pixel)

    def simulate(self, g: torch.Generator, n: int, device, stage: str) -> dict[str, torch.Tensor]:
        self.setup()
        drr = self.drr.to(device)
        rz = torch.deg2rad(uniform(g, self.rotation_deg, n, device))
        rx, ry = (torch.deg2rad(uniform(g, self.tilt_deg, n, device)) for _ in range(2))
        pose = Pose(torch.stack([rx, ry, rz], 1), torch.zeros(n, 3, device=device))
        kvp = uniform(g, self.kvp, n, device)
        log_n = uniform(g, [math.log10(p) for p in self.photons], n, device)
        spr = uniform(g, self.scatter, n, device)
        spectrum = kramers_spectrum(kvp, drr.energies_kev)
        outs = [drr(Pose(pose.rotation[i:i + 1], pose.translation[i:i + 1]), spectrum[i:i + 1],
                    photons=10 ** log_n[i:i + 1], blur_mm=self.blur_mm, scatter_fraction=float(spr[i]), generator=g)
                for i in range(n)]  # scatter is a per-call scalar
        image = torch.cat([o["image"] for o in outs])
        fp = torch.cat([o["footprint"] for o in outs])  # (B, 1, H, W) mm of bone
        params = torch.stack([kvp / 150, log_n / 6, rx / math.pi, ry / math.pi, rz / math.pi, spr], 1)
        return {IMAGE: (image / 6.0).clamp(0, 1) * 2 - 1, COND: (fp / 50.0).clamp(0, 1) * 2 - 1,
                MASK: (fp[:, 0] > 1.0).long(), PARAMS: params.float()}

    def model_kwargs(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "channels": 1, "num_classes": 0, "num_params": 6, "cond_channels": 1}
