"""Momentum encoders and feature queues, as MoCo and BLIP keep them.

A momentum copy starts as the online module and afterwards only follows it, ``m * copy + (1 - m) *
online`` after every step; a queue is a ring buffer of the last features of earlier batches, used as
extra negatives. Both live in the model's state (parameters without gradients and buffers), so a
checkpoint resumes them exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def frozen_copies(modules: Sequence[nn.Module], copies: Sequence[nn.Module]) -> None:
    """Give each of ``copies`` its module's weights and take it out of the optimizer's reach."""
    for module, copy in zip(modules, copies, strict=True):
        copy.load_state_dict(module.state_dict())
        copy.requires_grad_(False)


@torch.no_grad()
def momentum_update(modules: Sequence[nn.Module], copies: Sequence[nn.Module], momentum: float) -> None:
    """``copy = momentum * copy + (1 - momentum) * module``, parameter by parameter."""
    for module, copy in zip(modules, copies, strict=True):
        for online, follower in zip(module.parameters(), copy.parameters(), strict=True):
            follower.mul_(momentum).add_(online.detach(), alpha=1 - momentum)


@torch.no_grad()
def enqueue(queues: Sequence[torch.Tensor], pointer: torch.Tensor, features: Sequence[torch.Tensor]) -> None:
    """Write the L2-normalised rows of each of ``features (N, D)`` into its ring buffer ``queues (Q, D)``
    from the shared ``pointer`` on, oldest first out (only the last Q rows when N > Q); move ``pointer``."""
    for queue, rows in zip(queues, features, strict=True):
        rows = F.normalize(rows.float(), dim=-1)[-len(queue) :]
        index = (pointer + torch.arange(len(rows), device=rows.device)) % len(queue)
        queue[index] = rows.to(queue.dtype)
    pointer.copy_((pointer + min(len(features[0]), len(queues[0]))) % len(queues[0]))
