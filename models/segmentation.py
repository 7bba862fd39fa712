"""Per-pixel segmentation as a LightningModule: trained on simulated batches (IMAGE, MASK), Dice per class in test."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from datamodules.image_set import IMAGE
from datamodules.simulated import MASK
from evaluation.segmentation import confusion, dice_from_confusion
from models.nets.segmentation import SegmentationUNet
from scarce import metrics as M
from scarce.errors import DataError, check_range


class Segmenter(L.LightningModule):
    """Cross-entropy + soft Dice on (B, C, H, W) images and (B, H, W) int64 masks; logs test/dice_<class>.

    in_channels, num_classes, classes: from the datamodule; width, levels: the U-Net; optimizer: ``_partial_``.
    """

    def __init__(self, in_channels: int, num_classes: int, classes: Sequence[str] | None = None, width: int = 16,
                 levels: int = 3, optimizer: Callable[..., torch.optim.Optimizer] | None = None, **_: Any):
        super().__init__()
        check_range("model.num_classes", num_classes, 2, integer=True)
        check_range("model.width", width, 2, integer=True)
        self.save_hyperparameters(ignore=["optimizer"])
        self.classes = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
        self.net = SegmentationUNet(in_channels, num_classes, width, levels)
        self._optimizer = optimizer
        self._cm: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if MASK not in batch:
            raise DataError(f"the segmentation model needs a {MASK!r} entry in the batch (keys: {sorted(batch)})")
        logits = self.net(batch[IMAGE].float())
        y = batch[MASK]
        prob = logits.softmax(1)
        onehot = F.one_hot(y, self.hparams.num_classes).permute(0, 3, 1, 2).float()
        inter, total = (prob * onehot).sum((0, 2, 3)), (prob + onehot).sum((0, 2, 3))
        soft_dice = 1 - ((2 * inter + 1) / (total + 1)).mean()
        return F.cross_entropy(logits, y) + soft_dice, logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        self.log(M.name("train", "loss"), loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=len(batch[IMAGE]), sync_dist=True)
        return loss

    def _eval(self, batch: dict, stage: str) -> torch.Tensor:
        loss, logits = self._loss(batch)
        self.log(M.name(stage, "loss"), loss, on_epoch=True, batch_size=len(batch[IMAGE]), sync_dist=True)
        cm = confusion(logits.argmax(1), batch[MASK], self.hparams.num_classes)
        self._cm[stage] = cm if stage not in self._cm else self._cm[stage] + cm
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._eval(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._eval(batch, "test")

    def _log_dice(self, stage: str) -> None:
        cm = self._cm.pop(stage, None)
        if cm is None:
            return
        cm = self.trainer.strategy.reduce(cm.double(), reduce_op="sum") if self.trainer.world_size > 1 else cm
        dice = dice_from_confusion(cm)
        for name, d in zip(self.classes, dice.tolist()):
            if d == d:  # NaN: the class is in neither prediction nor target
                self.log(M.name(stage, f"dice_{name}"), d, rank_zero_only=True)
        fg = dice[1:][~dice[1:].isnan()]
        if len(fg):
            self.log(M.name(stage, "dice_mean"), fg.mean().item(), rank_zero_only=True)

    def on_validation_epoch_end(self) -> None:
        self._log_dice("val")

    def on_test_epoch_end(self) -> None:
        self._log_dice("test")

    @torch.no_grad()
    def predict_masks(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """(N, C, H, W) images in [-1, 1] -> (N, H, W) int64 predicted classes."""
        self.eval()
        return torch.cat([self.net(images[i:i + batch_size].to(self.device)).argmax(1).cpu()
                          for i in range(0, len(images), batch_size)])

    def configure_optimizers(self):
        factory = self._optimizer or (lambda params: torch.optim.AdamW(params, lr=2e-3))
        return factory(params=self.parameters())
