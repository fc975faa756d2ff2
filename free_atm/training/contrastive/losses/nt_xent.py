"""NT-Xent over the valid objects of the global batch (SimCLR; Free-ATM eq. 3), logits in float32.

For an anchor ``i`` (an object in one view) with positive ``p(i)`` (the same object in the other view) and
the set ``K(i)`` of every other valid object of both views across all processes::

    loss_i = -log( exp(sim(z_i, z_p(i)) / T) / sum_{k in K(i)} exp(sim(z_i, z_k) / T) )

with ``sim`` the cosine similarity and ``T`` the temperature; the loss is the mean over local anchors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...distributed import gather_with_grad, world_size_and_rank


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, valid: torch.Tensor, temperature: float) -> tuple[torch.Tensor, dict]:
    """Contrastive loss of object embeddings in two views.

    ``z1``, ``z2``: ``(N, D)`` embeddings of the same N object slots in each view (N = batch x M, the
    same on every process); ``valid``: ``(N,)``. Each valid object of either view is an anchor whose
    positive is the same object in the other view and whose negatives are every other valid object of
    both views across all processes. Invalid slots contribute nothing. Returns the mean loss over local
    anchors and metrics (``valid_objects`` in the global batch, ``positive_top1`` accuracy).
    """
    z1, z2 = F.normalize(z1.float(), dim=-1), F.normalize(z2.float(), dim=-1)
    keys = torch.cat([gather_with_grad(z1), gather_with_grad(z2)])  # (2G, D)
    key_valid = torch.cat([gather_with_grad(valid.float()), gather_with_grad(valid.float())]).bool()
    total = keys.shape[0] // 2
    offset = world_size_and_rank()[1] * z1.shape[0]
    local = torch.arange(z1.shape[0], device=z1.device) + offset
    anchors = torch.cat([z1, z2])[torch.cat([valid, valid]).bool()]
    anchor_index = torch.cat([local, local + total])[torch.cat([valid, valid]).bool()]
    positive_index = (anchor_index + total) % (2 * total)
    logits = anchors @ keys.T / temperature
    excluded = ~key_valid.unsqueeze(0).expand_as(logits).clone()
    excluded[torch.arange(len(anchors)), anchor_index] = True
    logits = logits.masked_fill(excluded, float("-inf"))
    if len(anchors) == 0:
        loss = (z1.sum() + z2.sum()) * 0.0
        accuracy = torch.zeros((), device=z1.device)
    else:
        loss = F.cross_entropy(logits, positive_index)
        accuracy = (logits.argmax(-1) == positive_index).float().mean()
    return loss, {"valid_objects": key_valid.sum().float() / 2, "positive_top1": accuracy.detach()}
