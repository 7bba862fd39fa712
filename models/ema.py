"""Exponential moving average of a network's weights (the copy GANs and diffusion models sample from)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_copy(net: nn.Module) -> nn.Module:
    """A frozen copy of ``net`` to hold the average; register it as a submodule so checkpoints carry it."""
    ema = copy.deepcopy(net)
    ema.requires_grad_(False)
    ema.eval()
    return ema


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, decay: float, step: int | None = None, warmup: int = 0) -> float:
    """ema <- decay * ema + (1 - decay) * net, parameters and floating buffers; returns the decay used.

    With ``warmup`` > 0 the decay ramps as min(decay, (1 + step) / (10 + step)) (the schedule used by TensorFlow's
    ExponentialMovingAverage with num_updates), so early averages are not dominated by the random initialisation.
    """
    if warmup and step is not None:
        decay = min(decay, (1 + step) / (10 + step))
    ema_p = [p for p in ema.parameters()]
    net_p = [p.detach() for p in net.parameters()]
    torch._foreach_lerp_(ema_p, net_p, 1.0 - decay)
    for be, bn in zip(ema.buffers(), net.buffers()):
        if be.dtype.is_floating_point:
            be.lerp_(bn, 1.0 - decay)
        else:
            be.copy_(bn)
    return decay
