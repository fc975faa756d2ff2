"""A cross-attention processor that leaves the layer's output to the processor it wraps and records the
probabilities of the object tokens."""

from __future__ import annotations

import inspect

import torch
from diffusers.models.attention_processor import Attention

from .aggregator import AttentionAggregator
from .attribution import Attribution
from .taps import ModuleTaps


def cross_attention_probs(
    attn: Attention,
    hidden_states: torch.Tensor,
    text_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    temb: torch.Tensor | None = None,
) -> torch.Tensor:
    """``softmax(Q K^T * scale)`` of one cross-attention layer, ``(batch, heads, queries, keys)``, float32.

    The query and key are formed as the stock processors form them (spatial and group norms, cross
    norm, q/k norms), and the softmax runs over every text key in float32, which also honours SD2's
    upcast settings.
    """
    if attn.norm_cross:
        text_states = attn.norm_encoder_hidden_states(text_states)
    return probs_from_projections(attn, layer_query(attn, hidden_states, temb), attn.to_k(text_states), attention_mask)


def layer_query(attn: Attention, hidden_states: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
    """The projected query ``(B, Q, D)`` of a layer, after the spatial and group norms the stock processors apply."""
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    if hidden_states.ndim == 4:
        batch, channels, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    return attn.to_q(hidden_states)


def attribution_probs(attn: Attention, query: torch.Tensor, attribution: Attribution) -> torch.Tensor:
    """For queries ``(B, Q, D)``, each absent word's probabilities over its own encoding's keys, made by this
    layer's key projection, at the word's token columns: ``(B, heads, Q, K)`` (see :mod:`.attribution`)."""
    states = attribution.states.to(query.device, query.dtype)
    if attn.norm_cross:
        states = attn.norm_encoder_hidden_states(states)
    keys = attn.to_k(states).unsqueeze(1).expand(-1, query.shape[0], -1, -1)  # (A, B, L, D)
    parts = [
        probs_from_projections(attn, query, keys[a])[..., columns.to(query.device)]
        for a, columns in enumerate(attribution.columns)
    ]
    return torch.cat(parts, -1)


def probs_from_projections(
    attn: Attention, query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The probabilities of :func:`cross_attention_probs` from the layer's projected query ``(B, Q, D)``
    and key ``(B, K, D)``: heads split, q/k norms, float32 scores, the mask, the softmax."""
    batch, num_keys = key.shape[:2]
    head_dim = key.shape[-1] // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * attn.scale
    if attention_mask is not None:
        mask = attn.prepare_attention_mask(attention_mask, num_keys, batch)
        scores = scores + mask.view(batch, attn.heads, -1, num_keys).float()
    return scores.softmax(dim=-1)


class AttentionCaptureProcessor:
    """Wraps a cross-attention layer's processor: the output is the wrapped processor's, untouched.

    It hands the aggregator the probabilities of the conditional half (the second half of the batch under
    classifier-free guidance, the whole batch without it), formed from the query and key that the wrapped
    processor projects itself (caught by hooks on ``to_q`` and ``to_k`` during its call), so the only
    extra work is the conditional half's scores and softmax; a processor that projects otherwise (fused
    projections, slices) gets the projections made again. The text keys are the plain text states, so
    IP-Adapter processors (which receive a tuple of text and image states, and project the image keys
    with their own layers) keep working.
    """

    def __init__(self, processor, aggregator: AttentionAggregator) -> None:
        self.processor = processor
        self.aggregator = aggregator
        # diffusers passes a processor only the cross_attention_kwargs that its __call__ declares; declare
        # the wrapped processor's parameters so that each of them (IP-Adapter masks, ...) still reaches it.
        # The instance attribute is what `inspect.signature(processor.__call__)` sees; calls still go
        # through the class's __call__.
        self.__call__ = with_signature(self._forward, inspect.signature(processor.__call__))

    def _forward(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states=None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        text_states = encoder_hidden_states[0] if isinstance(encoder_hidden_states, tuple) else encoder_hidden_states
        num_queries = (
            hidden_states.shape[-2] * hidden_states.shape[-1] if hidden_states.ndim == 4 else hidden_states.shape[1]
        )
        call = {"encoder_hidden_states": encoder_hidden_states, "attention_mask": attention_mask, **kwargs}
        if not self.aggregator.wants(num_queries):
            return self.processor(attn, hidden_states, **call)
        n, total = self.aggregator.num_images, text_states.shape[0]
        if total not in (n, 2 * n):
            raise RuntimeError(
                f"cross-attention batch {total} is neither {n} images nor {2 * n} (classifier-free guidance)"
            )
        with ModuleTaps({"query": attn.to_q, "key": attn.to_k}) as taps:
            output = self.processor(attn, hidden_states, **call)
        conditional = slice(total - n, None)
        mask = None if attention_mask is None else attention_mask[conditional]
        query, key = taps.output("query"), taps.output("key")
        if _whole_batch(query, total, num_queries) and _whole_batch(key, total, text_states.shape[1]):
            query = query[conditional]
            probs = probs_from_projections(attn, query, key[conditional], mask)
        else:  # fused or sliced projections: form them again
            temb = kwargs.get("temb")
            query = layer_query(attn, hidden_states[conditional], None if temb is None else temb[conditional])
            text = text_states[conditional]
            probs = probs_from_projections(
                attn, query, attn.to_k(attn.norm_encoder_hidden_states(text) if attn.norm_cross else text), mask
            )
        if self.aggregator.attribution is not None:
            probs = torch.cat([probs, attribution_probs(attn, query, self.aggregator.attribution)], -1)
        self.aggregator.add(probs)
        return output

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return self._forward(*args, **kwargs)


def _whole_batch(projection: torch.Tensor | None, batch: int, length: int) -> bool:
    """Whether a tapped projection covers the whole batch and sequence in one piece."""
    return projection is not None and tuple(projection.shape[:2]) == (batch, length)


def with_signature(function, signature: inspect.Signature):
    """``function`` behind a callable that reports ``signature`` to ``inspect`` (diffusers filters the
    attention kwargs it passes by the processor's signature)."""

    def call(*args, **kwargs):
        return function(*args, **kwargs)

    call.__signature__ = signature
    return call
