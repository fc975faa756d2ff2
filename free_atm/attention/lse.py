"""The attention kernel's own log-sum-exp, taken from the call that computes the layer's output.

An object's map on joint attention (SD3, Flux) is the probability that each image query puts on the
object's text columns of the layer's softmax over *every* key, image keys included:
``exp(q . k_j * scale - lse(q))``. The normaliser ``lse`` costs a second pass of the image-query scores
(quadratic in the image tokens), yet the fused attention kernels compute it anyway: on the CPU
``aten._scaled_dot_product_flash_attention_for_cpu`` returns ``(out, logsumexp)`` and its output is the
one ``F.scaled_dot_product_attention`` returns (bitwise: it is the kernel SDPA runs there); on CUDA the
flash and memory-efficient kernels return it too.

:func:`kernel_lse` runs the wrapped processor with its SDPA call served by such a kernel, and keeps the
query, key and log-sum-exp of that call. Pitfall: the processor reads ``F.scaled_dot_product_attention``
from the ``torch.nn.functional`` module, so serving it means replacing that attribute while the call runs.
The replacement is installed once for all threads (reference-counted, removed by the last user) and
serves only the thread that asked, for its first SDPA call; any call it cannot serve exactly (a mask,
dropout, causal or grouped attention, a device or dtype without such a kernel) passes through to the
original untouched, and then nothing is kept and the caller falls back to the second pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class KernelCall:
    """The tensors of one served SDPA call: ``query``, ``key``, ``value`` ``(B, H, S, d)`` as the kernel got
    them, the ``scale`` it used, and ``lse`` ``(B, H, S)``, the natural log-sum-exp of each query's scores."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    lse: torch.Tensor
    scale: float


def attention_with_lse(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(out, lse)`` of plain attention (no mask, no dropout) from one fused kernel call, or ``None``
    where no kernel returning the log-sum-exp applies to these tensors."""
    if query.dim() != 4 or not (query.dtype == key.dtype == value.dtype) or not query.is_floating_point():
        return None
    if query.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, scale=scale)
        return out, lse
    if query.device.type == "cuda":
        try:
            if query.dtype in (torch.float16, torch.bfloat16):
                out, lse = torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, scale=scale)[:2]
            else:
                out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
                    query, key, value, None, True, scale=scale
                )[:2]
        except RuntimeError:  # a head size or an architecture the kernel does not take
            return None
        return out, lse[..., : query.shape[2]]  # the efficient kernel pads the query length
    return None


class _Interceptor:
    """The stand-in for ``F.scaled_dot_product_attention``: serves the first call of each armed thread."""

    def __init__(self, original: Callable) -> None:
        self.original = original
        self.users = 0
        self.armed: dict[int, list[KernelCall]] = {}

    def __call__(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        taken = self.armed.pop(threading.get_ident(), None)
        if (
            taken is not None
            and attn_mask is None
            and dropout_p == 0.0
            and not is_causal
            and not kwargs.get("enable_gqa", False)
        ):
            served = attention_with_lse(query, key, value, scale)
            if served is not None:
                out, lse = served
                taken.append(KernelCall(query, key, value, lse, query.shape[-1] ** -0.5 if scale is None else scale))
                return out
        return self.original(
            query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kwargs
        )


_LOCK = threading.Lock()
_INTERCEPTOR: _Interceptor | None = None


@contextmanager
def kernel_lse() -> Iterator[list[KernelCall]]:
    """Within the block, this thread's first SDPA call runs on a kernel that returns the log-sum-exp; the
    yielded list then holds its :class:`KernelCall` (and stays empty where no such kernel applied)."""
    global _INTERCEPTOR
    taken: list[KernelCall] = []
    with _LOCK:
        if _INTERCEPTOR is None:
            _INTERCEPTOR = _Interceptor(F.scaled_dot_product_attention)
            F.scaled_dot_product_attention = _INTERCEPTOR
        _INTERCEPTOR.users += 1
        interceptor = _INTERCEPTOR
    interceptor.armed[threading.get_ident()] = taken
    try:
        yield taken
    finally:
        interceptor.armed.pop(threading.get_ident(), None)
        with _LOCK:
            interceptor.users -= 1
            if interceptor.users == 0:
                F.scaled_dot_product_attention = interceptor.original
                _INTERCEPTOR = None
