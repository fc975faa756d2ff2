"""MoCo-v2's InfoNCE against a queue of keys, logits in float32.

For a query ``q`` (an object in one view, from the online encoder), its key ``k+`` (the same object in the
other view, from the momentum encoder) and the queued keys ``k_j`` of earlier batches::

    loss = -log( exp(q . k+ / T) / (exp(q . k+ / T) + sum_j exp(q . k_j / T)) )

on L2-normalised vectors, averaged over the queries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def moco_infonce(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, dict]:
    """MoCo's InfoNCE: each query's positive is its key (the same object in the other view, from the
    momentum encoder); the negatives are the queued keys of earlier batches. Logits in float32."""
    q, k = F.normalize(q.float(), dim=-1), F.normalize(k.float(), dim=-1)
    logits = torch.cat([(q * k).sum(-1, keepdim=True), q @ queue.float().T], dim=1) / temperature
    target = torch.zeros(len(q), dtype=torch.long, device=q.device)
    if len(q) == 0:
        return q.sum() * 0.0, {"positive_top1": torch.zeros((), device=q.device)}
    return F.cross_entropy(logits, target), {"positive_top1": (logits.argmax(-1) == 0).float().mean().detach()}
