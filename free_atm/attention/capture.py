"""Install capture processors on a UNet's cross-attention layers for one call, then restore."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .aggregator import AttentionAggregator
from .processor import AttentionCaptureProcessor


def cross_attention_processor_names(unet: torch.nn.Module) -> list[str]:
    """Names (as in ``unet.attn_processors``) of the processors of cross-attention layers."""
    names = []
    for name in unet.attn_processors:
        module = unet.get_submodule(name.removesuffix(".processor"))
        if getattr(module, "is_cross_attention", False):
            names.append(name)
    return names


@contextmanager
def capture_cross_attention(unet: torch.nn.Module, aggregator: AttentionAggregator) -> Iterator[AttentionAggregator]:
    """Route every cross-attention layer of ``unet`` through a capture processor for the ``with`` block.

    Self-attention keeps its processor; each cross-attention processor is wrapped, so its output is
    unchanged. On exit the wrapped processors are put back. If something replaced one of ours during the
    block (attention slicing, xformers), that processor is left in place and ``RuntimeError`` is raised,
    since the maps would silently miss those layers.
    """
    originals = unet.attn_processors
    names = cross_attention_processor_names(unet)
    if not names:
        raise ValueError(f"{type(unet).__name__} has no cross-attention layer to capture")
    wrappers = {name: AttentionCaptureProcessor(originals[name], aggregator) for name in names}
    unet.set_attn_processor({**originals, **wrappers})
    hook = unet.register_forward_pre_hook(aggregator.on_unet_call, with_kwargs=True)
    try:
        yield aggregator
    finally:
        hook.remove()
        current = unet.attn_processors
        replaced = sorted(name for name, wrapper in wrappers.items() if current[name] is not wrapper)
        unet.set_attn_processor(
            {
                name: originals[name] if name in wrappers and name not in replaced else proc
                for name, proc in current.items()
            }
        )
    if replaced:
        raise RuntimeError(
            f"{len(replaced)} cross-attention processors were replaced during the call (for example by "
            f"enable_attention_slicing or xformers), first {replaced[0]!r}; their maps are missing. "
            "Set the processors before calling the pipeline."
        )
