"""The process group seen from one process: its size and rank, and gathering with gradients."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size_and_rank() -> tuple[int, int]:
    """The default process group's size and this process's rank; ``(1, 0)`` outside distributed runs."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All processes' ``tensor`` concatenated along dim 0, gradients flowing back to each process's part."""
    if world_size_and_rank()[0] == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0)


@torch.no_grad()
def gather(tensor: torch.Tensor) -> torch.Tensor:
    """All processes' ``tensor`` concatenated along dim 0, for tensors no gradient flows through
    (token ids, masks); the same shape on every process."""
    world_size = world_size_and_rank()[0]
    if world_size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def pad_to_global_length(tensor: torch.Tensor, value: int) -> torch.Tensor:
    """``tensor (B, L)`` padded with ``value`` on the right to the longest ``L`` of all processes, so that
    per-process batches padded to their own longest text gather (one host synchronisation)."""
    if world_size_and_rank()[0] == 1:
        return tensor
    longest = int(gather(torch.tensor([tensor.shape[1]], device=tensor.device)).max())
    return torch.nn.functional.pad(tensor, (0, longest - tensor.shape[1]), value=value)
