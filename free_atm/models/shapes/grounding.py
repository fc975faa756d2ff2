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
    ``store``, with gradients, for :func:`grounding_loss`, and with ``self_store`` each self-attention
    layer's ``(B * heads, N, N)`` for :func:`region_loss`. For training only: inference uses the capture
    processors of :mod:`free_atm.attention`."""

    def __init__(self, store: list[torch.Tensor], self_store: list[torch.Tensor] | None = None) -> None:
        self.store, self.self_store = store, self_store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is None and self.self_store is None:  # nothing to keep: the fused kernel (2x faster)
            return self.fused(attn, hidden_states)
        if encoder_hidden_states is None:
            query, key, value = (attn.head_to_batch_dim(f(hidden_states)) for f in (attn.to_q, attn.to_k, attn.to_v))
            probs = attn.get_attention_scores(query, key, None)
            self.self_store.append(probs)
            return attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(torch.bmm(probs, value))))
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, None)
        self.store.append(probs)
        return attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(torch.bmm(probs, value))))

    @staticmethod
    def fused(attn, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, heads = hidden_states.shape[0], attn.heads
        query, key, value = (
            projection(hidden_states).view(batch, -1, heads, attn.inner_dim // heads).transpose(1, 2)
            for projection in (attn.to_q, attn.to_k, attn.to_v)
        )
        out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
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


def region_loss(probabilities: list[torch.Tensor], masks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over self-attention layers of ``sum w (1 - share)^2 / sum w`` over every position and region,
    ``share`` being the part of a position's head-averaged self-attention that lies in its own region
    (each valid object, and the background), ``w`` the position's membership of that region.

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
    losses = []
    for probs in probabilities:
        attention = probs.view(batch, -1, *probs.shape[1:]).float().mean(1)  # (B, N, N)
        side = math.isqrt(attention.shape[1])
        inside = F.adaptive_avg_pool2d(masks.float(), side).flatten(2) * valid[..., None]  # (B, M, N)
        regions = torch.cat([inside, (1 - inside.sum(1, keepdim=True)).clamp_min(0)], 1)  # (B, M + 1, N)
        share = regions @ attention.transpose(1, 2)  # (B, R, N): attention of each position inside region r
        losses.append((regions * (1 - share).square()).sum() / regions.sum().clamp_min(1e-8))
    return torch.stack(losses).mean()
