"""What every scarce generator shares: optimizers from config, a checkpoint that names its class."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from scarce.errors import DataError

CHECKPOINT_KEY = "scarce"  # checkpoint["scarce"] = {"class_path": ..., "extra": ...}
ALLOWED_PREFIX = "models."  # only our own classes are rebuilt from a checkpoint


class GeneratorModule(L.LightningModule):
    """Base LightningModule: optimizer/scheduler as ``_partial_`` from config; rebuildable from plain checkpoints.

    Subclasses implement :meth:`generate` and may put plain data in :meth:`extra_state` / :meth:`load_extra_state`.
    """

    domain = "table"  # what generate() returns: "table" (a DataFrame) or "image" (an ImageSet)

    def __init__(self, optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None):
        super().__init__()
        self._optimizer_factory = optimizer
        self._scheduler_factory = scheduler

    def configure_optimizers(self):
        factory = self._optimizer_factory or (lambda params: torch.optim.Adam(params, lr=1e-3))
        opt = factory(params=self.parameters())
        if self._scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self._scheduler_factory(optimizer=opt)}}

    # -- plain, weights_only-safe extra state --------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        cls = type(self)
        checkpoint[CHECKPOINT_KEY] = {"class_path": f"{cls.__module__}.{cls.__qualname__}", "extra": self.extra_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if CHECKPOINT_KEY in checkpoint:
            self.load_extra_state(checkpoint[CHECKPOINT_KEY]["extra"])

    def generate(self, n: int, seed: int = 0, **kwargs: Any) -> Any:
        raise NotImplementedError


def load_generator(path: str, map_location: str = "cpu") -> GeneratorModule:
    """Rebuild a generator from a checkpoint written by :class:`GeneratorModule` (``weights_only`` load)."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as e:
        raise DataError(f"ckpt_path={path!r}: no such file") from e
    except Exception as e:  # noqa: BLE001 - anything torch cannot read safely is a bad checkpoint for us
        raise DataError(f"ckpt_path={path!r} is not a checkpoint this version can read safely: {e}") from e
    info = ckpt.get(CHECKPOINT_KEY) if isinstance(ckpt, dict) else None
    if not info:
        raise DataError(f"ckpt_path={path!r} was not written by a scarce generator (no {CHECKPOINT_KEY!r} entry)")
    class_path = info["class_path"]
    if not class_path.startswith(ALLOWED_PREFIX):
        raise DataError(f"ckpt_path={path!r} names class {class_path!r}; only classes under {ALLOWED_PREFIX!r} load")
    module_name, _, cls_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    model = cls(**ckpt.get("hyper_parameters", {}))
    model.load_state_dict(ckpt["state_dict"])
    model.on_load_checkpoint(ckpt)
    model.eval()
    return model
