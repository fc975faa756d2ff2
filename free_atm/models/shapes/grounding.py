"""Token grounding for training the shapes model: a loss that moves the cross-attention of each word of an
object's phrase into that object's exact mask (the token loss of TokenCompose, Wang et al., CVPR 2024).

A small model trained for an hour on a CPU learns to read the caption through cross-attention as a bag
of words (every pixel attends almost uniformly to every token) and leaves the layout to its convolutions,
so its maps do not localise. The shapes world knows every object's mask, so training can ask for what
large models learn from scale: the share of each object word's attention that falls inside the object.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class GroundingAttnProcessor:
    """Plain attention that appends each cross-attention layer's probabilities ``(B * heads, N, L)`` to
    ``store``, with gradients, for :func:`grounding_loss`; with ``self_store`` and regions given
    (:meth:`set_regions`), each self-attention layer's region shares for :func:`region_loss_from_shares`.
    For training only: inference uses the capture processors of :mod:`free_atm.attention`.

    Pitfall: the region loss needs, per position, the share of its attention in each region,
    ``P @ R^T``; materialising ``P`` (an explicit softmax over N x N per head) doubled the cost of a
    training step on a CPU. The regions ride along as extra value channels of the fused kernel instead:
    ``softmax(QK^T) [V, R^T] = [PV, PR^T]``, one call, no N x N tensor, the same numbers.
    """

    def __init__(self, store: list[torch.Tensor], self_store: list | None = None) -> None:
        self.store, self.self_store = store, self_store
        self.masks: torch.Tensor | None = None
        self.valid: torch.Tensor | None = None

    def set_regions(self, masks: torch.Tensor | None, valid: torch.Tensor | None) -> None:
        """The next forward's object masks ``(B, M, H, W)`` and which objects count ``(B, M)``."""
        self.masks, self.valid = masks, valid

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is None:
            return self.fused(attn, hidden_states)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, None)
        self.store.append(probs)
        return attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(torch.bmm(probs, value))))

    def fused(self, attn, hidden_states: torch.Tensor) -> torch.Tensor:
        """Self-attention through SDPA; with regions set, their shares ride along as extra value channels."""
        batch, heads = hidden_states.shape[0], attn.heads
        query, key, value = (
            projection(hidden_states).view(batch, -1, heads, attn.inner_dim // heads).transpose(1, 2)
            for projection in (attn.to_q, attn.to_k, attn.to_v)
        )
        keep = self.self_store is not None and self.masks is not None
        if keep:
            side = math.isqrt(query.shape[2])
            regions = region_weights(self.masks, self.valid, side).to(value.dtype)  # (B, R, N)
            value = torch.cat([value, regions.transpose(1, 2)[:, None].expand(-1, heads, -1, -1)], -1)
        out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
        if keep:
            width = attn.inner_dim // heads
            self.self_store.append((out[..., width:].float().mean(1).transpose(1, 2), regions.float()))
            out = out[..., :width]
        return attn.to_out[1](attn.to_out[0](out.transpose(1, 2).flatten(2)))


def grounding_loss(
    probabilities: list[torch.Tensor], token_weights: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Mean over layers and over every token of every valid object of ``(1 - share)^2``, ``share`` being
    the part of that token's head-averaged attention map that lies inside its object's mask.

    Pitfall: each token answers for itself. Grounding the phrase's averaged map ("red" and "star" at half
    weight each) let the model meet the loss with "red" alone and no attention at all on "star": the
    trained models gave the kind words under 0.1% of the attention, and changing the kind in a caption
    changed nothing in the image.

    Args:
        probabilities: per cross-attention layer, ``(B * heads, N, L)`` over a square grid of N positions.
        token_weights: ``(B, L, M)``, non-zero where token l belongs to object m
            (:func:`free_atm.tokens.object_token_weights`).
        masks: ``(B, M, H, W)`` object masks in [0, 1], area-resized to each layer's grid.
        valid: ``(B, M)``, objects that count (real objects of captions that were not dropped).
    """
    batch = token_weights.shape[0]
    counted = (token_weights > 0) & valid[:, None, :]  # (B, L, M)
    losses = []
    for probs in probabilities:
        maps = probs.view(batch, -1, *probs.shape[1:]).float().mean(1)  # (B, N, L)
        side = math.isqrt(maps.shape[1])
        inside = F.adaptive_avg_pool2d(masks.float(), side).flatten(2)  # (B, M, N)
        share = (inside @ maps).transpose(1, 2) / maps.sum(1).clamp_min(1e-8)[..., None]  # (B, L, M)
        losses.append(((1 - share).square() * counted).sum() / counted.sum().clamp_min(1))  # 0 if none counts
    return torch.stack(losses).mean()


def region_weights(masks: torch.Tensor, valid: torch.Tensor, side: int) -> torch.Tensor:
    """Each position's membership ``(B, M + 1, side * side)`` of every valid object (area-resized masks) and
    of the background (what no object covers)."""
    inside = F.adaptive_avg_pool2d(masks.float(), side).flatten(2) * valid[..., None]  # (B, M, N)
    return torch.cat([inside, (1 - inside.sum(1, keepdim=True)).clamp_min(0)], 1)


def region_loss_from_shares(shares: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Mean over self-attention layers of ``sum w (1 - share)^2 / sum w``: per layer, ``share`` ``(B, R, N)``
    is the head-averaged attention of each position inside region r and ``w`` ``(B, R, N)`` the position's
    membership of r (:func:`region_weights`)."""
    losses = [(w * (1 - share).square()).sum() / w.sum().clamp_min(1e-8) for share, w in shares]
    return torch.stack(losses).mean()


def region_loss(probabilities: list[torch.Tensor], masks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The region loss from explicit self-attention probabilities (the reference of the fused path of
    :class:`GroundingAttnProcessor`): mean over layers of ``sum w (1 - share)^2 / sum w`` over every
    position and region, ``share`` being the part of a position's head-averaged self-attention that lies
    in its own region (each valid object, and the background), ``w`` the position's membership of it.

    It asks the self-attention to group the pixels of one object, which is what refining a map along it
    (:mod:`free_atm.attention.refinement`) relies on: trained on denoising alone, the shapes model's
    self-attention gathered context from other regions, and one propagation step along it moved the maps
    off their objects (mean IoU 0.53 raw, 0.04 refined, on 16 generated images).

    Args:
        probabilities: per self-attention layer, ``(B * heads, N, N)`` over a square grid of N positions.
        masks: ``(B, M, H, W)`` object masks in [0, 1].
        valid: ``(B, M)``, objects that count; a sample without one is all background and costs nothing.
    """
    batch = masks.shape[0]
    shares = []
    for probs in probabilities:
        attention = probs.view(batch, -1, *probs.shape[1:]).float().mean(1)  # (B, N, N)
        regions = region_weights(masks, valid, math.isqrt(attention.shape[1]))
        shares.append((regions @ attention.transpose(1, 2), regions))  # (B, R, N): each position's share in r
    return region_loss_from_shares(shares)
