"""The capture processor of a UNet's self-attention layers, feeding the refinement's running sum
(:mod:`.refinement`): the wrapped processor computes the output, the conditional half's probabilities are
averaged over heads one head at a time (one head's ``N x N`` scores alive at once)."""

from __future__ import annotations

import inspect

import torch
from diffusers.models.attention_processor import Attention

from .processor import cross_attention_probs, with_signature
from .refinement import SelfAttentionAggregator, grid_of
from .taps import ModuleTaps


def unet_layer_scales(unet: torch.nn.Module, cross: bool) -> dict[str, int]:
    """Processor name to downsampling factor for the self-attention (``cross=False``) or cross-attention
    layers of a ``UNet2DConditionModel``: down block ``i`` works at ``2**i``, the mid block at the
    coarsest factor, up block ``j`` at ``2**(len(up_blocks) - 1 - j)``."""
    coarsest = 2 ** (len(unet.down_blocks) - 1)
    scales = {}
    for name in unet.attn_processors:
        module = unet.get_submodule(name.removesuffix(".processor"))
        if bool(getattr(module, "is_cross_attention", False)) != cross:
            continue
        part, _, rest = name.partition(".")
        if part == "down_blocks":
            scales[name] = 2 ** int(rest.split(".")[0])
        elif part == "up_blocks":
            scales[name] = 2 ** (len(unet.up_blocks) - 1 - int(rest.split(".")[0]))
        else:
            scales[name] = coarsest
    return scales


def head_averaged_probs(attn: Attention, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """``mean over heads of softmax(Q K^T * scale)`` from projected ``(B, N, D)`` query and key, in float32,
    one head at a time (one head's ``N x N`` scores alive at once)."""
    batch, num_queries = query.shape[:2]
    head_dim = key.shape[-1] // attn.heads
    query = query.view(batch, num_queries, attn.heads, head_dim).transpose(1, 2).float()
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2).float()
    if attn.norm_q is not None:
        query, key = attn.norm_q(query), attn.norm_k(key)
    total = torch.zeros(batch, num_queries, key.shape[2], device=query.device)
    for head in range(attn.heads):
        total += (query[:, head] @ key[:, head].transpose(-1, -2) * attn.scale).softmax(-1)
    return total / attn.heads


class SelfAttentionCaptureProcessor:
    """Wraps a self-attention layer's processor: the output is the wrapped processor's, untouched, and the
    conditional half's head-averaged probabilities, formed from the query and key the wrapped processor
    projected (caught by hooks), go to a :class:`SelfAttentionAggregator`."""

    def __init__(self, processor, aggregator: SelfAttentionAggregator, scale: int) -> None:
        self.processor, self.aggregator, self.scale = processor, aggregator, scale
        self.__call__ = with_signature(self._forward, inspect.signature(processor.__call__))

    def _forward(self, attn: Attention, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not (self.aggregator.active and self.scale in self.aggregator.scales):
            return self.processor(attn, hidden_states, *args, **kwargs)
        with ModuleTaps({"query": attn.to_q, "key": attn.to_k}) as taps:
            output = self.processor(attn, hidden_states, *args, **kwargs)
        n, total = self.aggregator.num_images, hidden_states.shape[0]
        conditional = slice(total - n, None)
        query, key = taps.output("query"), taps.output("key")
        if query is not None and key is not None and query.shape[0] == total and query.ndim == 3:
            probs = head_averaged_probs(attn, query[conditional], key[conditional])
        else:  # fused or sliced projections: form them again
            states = hidden_states[conditional]
            probs = cross_attention_probs(attn, states, states).mean(1)
        self.aggregator.add(probs, grid_of(self.scale, self.aggregator.latent_size))
        return output

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return self._forward(*args, **kwargs)
