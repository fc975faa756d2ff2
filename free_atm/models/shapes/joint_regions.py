"""The region loss for the small SD3 of :mod:`.mmdit`: each image token's attention to the image kept
inside its own region, so that refining a map along the image-to-image part of the joint attention
(``refinement="self_attention"`` on SD3 and Flux) keeps it on its object, as the shapes UNet's region loss
(:func:`.grounding.region_loss`) does for its self-attention.

For a joint block with ``P`` its head-averaged softmax over image and text keys, image query ``i`` and
region ``r`` (each valid object, and the background) with memberships ``w_r``:

    share_r(i) = sum_{j image} P_ij w_r(j) / sum_{j image} P_ij,
    loss = mean over blocks of sum_{i, r} w_r(i) (1 - share_r(i))^2 / sum_{i, r} w_r(i)

The shares are renormalised over the image keys: refinement propagates along the image-to-image part
alone, and the loss must not ask the image to stop reading the caption.

Pitfall: ``P`` is never formed. As in :class:`.grounding.GroundingAttnProcessor`, the memberships ride
along the fused kernel as extra value channels (zeros for the text keys), with a column of ones for the
image keys' total: ``softmax(QK^T) [V, W] = [PV, PW]``, one call, no N x N tensor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .grounding import region_weights


class JointRegionAttnProcessor:
    """SD3's joint attention (``JointAttnProcessor2_0``'s numbers) that, with regions set
    (:meth:`set_regions`), appends each block's ``(share, w)`` ``(B, R, N)`` to ``store`` for
    :func:`.grounding.region_loss_from_shares`. For training only."""

    def __init__(self, store: list) -> None:
        self.store = store
        self.masks: torch.Tensor | None = None
        self.valid: torch.Tensor | None = None

    def set_regions(self, masks: torch.Tensor | None, valid: torch.Tensor | None) -> None:
        """The next forward's object masks ``(B, M, H, W)`` and which objects count ``(B, M)``."""
        self.masks, self.valid = masks, valid

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        batch, heads, images = hidden_states.shape[0], attn.heads, hidden_states.shape[1]

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, heads, x.shape[-1] // heads).transpose(1, 2)

        query, key, value = (
            split(attn.to_q(hidden_states)),
            split(attn.to_k(hidden_states)),
            split(attn.to_v(hidden_states)),
        )
        if attn.norm_q is not None:
            query, key = attn.norm_q(query), attn.norm_k(key)
        if encoder_hidden_states is not None:
            text_query = split(attn.add_q_proj(encoder_hidden_states))
            text_key = split(attn.add_k_proj(encoder_hidden_states))
            text_value = split(attn.add_v_proj(encoder_hidden_states))
            if attn.norm_added_q is not None:
                text_query, text_key = attn.norm_added_q(text_query), attn.norm_added_k(text_key)
            query, key = torch.cat([query, text_query], 2), torch.cat([key, text_key], 2)
            value = torch.cat([value, text_value], 2)
        width = value.shape[-1]
        keep = self.masks is not None
        if keep:
            regions = region_weights(self.masks, self.valid, math.isqrt(images)).to(value.dtype)  # (B, R, N)
            extra = value.new_zeros(batch, value.shape[2], regions.shape[1] + 1)
            extra[:, :images, :-1], extra[:, :images, -1] = regions.transpose(1, 2), 1.0
            value = torch.cat([value, extra[:, None].expand(-1, heads, -1, -1)], -1)
        out = F.scaled_dot_product_attention(query, key, value)
        if keep:
            inside = out[:, :, :images, width:].float().mean(1)  # (B, N, R + 1): shares, then the image total
            share = inside[..., :-1] / inside[..., -1:].clamp_min(1e-12)
            self.store.append((share.transpose(1, 2), regions.float()))
            out = out[..., :width]
        out = out.transpose(1, 2).reshape(batch, -1, heads * width).to(query.dtype)
        image_out, text_out = out[:, :images], out[:, images:]
        image_out = attn.to_out[1](attn.to_out[0](image_out))
        if encoder_hidden_states is None:
            return image_out
        if not attn.context_pre_only:
            text_out = attn.to_add_out(text_out)
        return image_out, text_out
