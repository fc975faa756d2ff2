"""The attention kernel's log-sum-exp: the served call's output is SDPA's, bitwise, and its log-sum-exp is
that of the explicit scores; only the armed thread's first plain call is served; the original returns."""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

from free_atm.attention.lse import attention_with_lse, kernel_lse


def qkv(dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(2, 3, 40, 16, generator=generator, dtype=dtype) for _ in range(3))


def test_kernel_output_is_sdpa_and_lse_is_the_scores_log_sum_exp():
    for dtype in (torch.float32, torch.bfloat16):
        query, key, value = qkv(dtype)
        out, lse = attention_with_lse(query, key, value, scale=0.3)
        assert torch.equal(out, F.scaled_dot_product_attention(query, key, value, scale=0.3))
        scores = query.float() @ key.float().transpose(-1, -2) * 0.3
        torch.testing.assert_close(lse, scores.logsumexp(dim=-1), atol=1e-4, rtol=1e-5)


def test_only_the_armed_threads_first_call_is_served():
    original = F.scaled_dot_product_attention
    query, key, value = qkv()
    other: list = []
    with kernel_lse() as served:
        assert F.scaled_dot_product_attention is not original
        worker = threading.Thread(target=lambda: other.append(F.scaled_dot_product_attention(query, key, value)))
        worker.start()
        worker.join()
        assert served == []  # another thread's call passes through
        first = F.scaled_dot_product_attention(query, key, value)
        second = F.scaled_dot_product_attention(query, key, value)
    assert F.scaled_dot_product_attention is original
    assert len(served) == 1 and served[0].query is query and served[0].key is key
    assert served[0].scale == 16**-0.5
    torch.testing.assert_close(served[0].lse, (query @ key.transpose(-1, -2) * 0.25).logsumexp(-1))
    assert torch.equal(first, second) and torch.equal(other[0], first)


def test_a_first_call_with_a_mask_passes_through_and_nothing_after_it_is_served():
    """A processor whose first attention call cannot be served gets no log-sum-exp from a later call."""
    query, key, value = qkv()
    mask = torch.ones(40, 40, dtype=torch.bool).tril()
    with kernel_lse() as served:
        masked = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        F.scaled_dot_product_attention(query, key, value)
    assert served == []
    assert torch.equal(masked, F.scaled_dot_product_attention(query, key, value, attn_mask=mask))


def test_nested_users_restore_the_original_once_the_last_leaves():
    original = F.scaled_dot_product_attention
    with kernel_lse():
        with kernel_lse():
            pass
        assert F.scaled_dot_product_attention is not original
    assert F.scaled_dot_product_attention is original
