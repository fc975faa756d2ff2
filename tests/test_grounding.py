"""The grounding loss used to train the shapes model, against a hand computation, and its processor
against diffusers' own attention."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from free_atm.models.shapes.grounding import (
    GroundingAttnProcessor,
    grounding_loss,
    region_loss,
    region_loss_from_shares,
)
from free_atm.testing import tiny_sd_components


def test_loss_is_the_squared_share_outside_the_mask():
    # one image, two heads, a 2 x 2 grid, 3 tokens; object 0 is token 1, object 1 is absent
    probs = torch.tensor(
        [
            [[0.2, 0.6, 0.2], [0.5, 0.2, 0.3], [0.4, 0.4, 0.2], [0.8, 0.1, 0.1]],
            [[0.2, 0.4, 0.4], [0.5, 0.4, 0.1], [0.6, 0.2, 0.2], [0.8, 0.1, 0.1]],
        ]
    )
    weights = torch.zeros(1, 3, 2)
    weights[0, 1, 0] = 1.0
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0, 0, 0] = 1.0  # the top-left cell, position 0
    # head-averaged column of token 1: [0.5, 0.3, 0.3, 0.1]; inside share 0.5 / 1.2
    expected = (1 - 0.5 / 1.2) ** 2
    loss = grounding_loss([probs], weights, masks, torch.tensor([[True, False]]))
    assert loss.item() == pytest.approx(expected)
    # two layers average; a mask covering everything leaves nothing to move
    assert grounding_loss([probs, probs], weights, torch.ones(1, 2, 2, 2), torch.tensor([[True, False]])) == 0


def test_each_token_of_a_phrase_is_grounded_on_its_own():
    # one head, a 2 x 2 grid; object 0 is the phrase of tokens 0 and 1 (averaged at half weight each)
    probs = torch.tensor([[[0.9, 0.1], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]])
    weights = torch.tensor([[[0.5], [0.5]]])
    masks = torch.zeros(1, 1, 2, 2)
    masks[0, 0, 0, 0] = 1.0
    # token 0 puts 0.9 of its 2.4 inside, token 1 puts 0.1 of 1.6 inside: each answers for itself,
    # so the phrase cannot meet the loss with one token while the other looks nowhere in particular
    expected = ((1 - 0.9 / 2.4) ** 2 + (1 - 0.1 / 1.6) ** 2) / 2
    loss = grounding_loss([probs], weights, masks, torch.tensor([[True]]))
    assert loss.item() == pytest.approx(expected)


def test_nothing_to_ground_gives_zero_not_nan():
    probs = torch.full((1, 4, 2), 0.5, requires_grad=True)
    loss = grounding_loss([probs], torch.tensor([[[1.0], [0.0]]]), torch.ones(1, 1, 2, 2), torch.tensor([[False]]))
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(probs.grad).all()


def test_processor_matches_diffusers_attention_and_records_cross_attention_only():
    unet = tiny_sd_components()["unet"]
    latents, states = torch.randn(1, 4, 32, 32), torch.randn(1, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        reference = unet(latents, 10, states).sample
        store: list[torch.Tensor] = []
        unet.set_attn_processor(GroundingAttnProcessor(store))
        grounded = unet(latents, 10, states).sample
        unet.set_attn_processor(AttnProcessor2_0())
    torch.testing.assert_close(grounded, reference, atol=1e-5, rtol=1e-4)
    cross_layers = sum(name.endswith("attn2.processor") for name in unet.attn_processors)
    assert len(store) == cross_layers and all(p.shape[-1] == 77 for p in store)
    torch.testing.assert_close(store[0].sum(-1), torch.ones(store[0].shape[:2]))


class ExplicitSelfAttention:
    """The reference: self-attention as an explicit softmax, its probabilities kept with gradients."""

    def __init__(self, store: list[torch.Tensor]) -> None:
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key, value = attn.head_to_batch_dim(attn.to_k(context)), attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, None)
        if encoder_hidden_states is None:
            self.store.append(probs)
        return attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(torch.bmm(probs, value))))


def test_the_fused_region_shares_equal_the_explicit_softmax_and_leave_the_output_alone():
    unet = tiny_sd_components()["unet"]
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 32, 32, generator=generator)
    states = torch.randn(2, 77, unet.config.cross_attention_dim, generator=generator)
    masks = (torch.rand(2, 3, 32, 32, generator=generator) > 0.7).float()
    valid = torch.tensor([[True, True, False], [True, False, False]])

    def loss_and_grads(processor, loss_of):
        unet.zero_grad()
        unet.set_attn_processor(processor)
        output = unet(latents, 10, states).sample
        loss = loss_of()
        (loss + output.square().mean()).backward()
        grads = [p.grad.clone() for p in unet.parameters() if p.grad is not None]
        unet.set_attn_processor(AttnProcessor2_0())
        return output.detach(), loss.detach(), grads

    probabilities: list[torch.Tensor] = []
    reference = loss_and_grads(ExplicitSelfAttention(probabilities), lambda: region_loss(probabilities, masks, valid))
    shares: list = []
    fused_processor = GroundingAttnProcessor([], shares)
    fused_processor.set_regions(masks, valid)
    fused = loss_and_grads(fused_processor, lambda: region_loss_from_shares(shares))
    self_layers = sum(name.endswith("attn1.processor") for name in unet.attn_processors)
    assert len(shares) == len(probabilities) == self_layers
    torch.testing.assert_close(fused[0], reference[0], atol=1e-5, rtol=1e-4)  # the UNet's output unchanged
    torch.testing.assert_close(fused[1], reference[1], atol=1e-6, rtol=1e-5)
    assert reference[1] > 0
    for got, expected in zip(fused[2], reference[2], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-4)


def test_region_loss_is_zero_for_attention_within_regions_and_the_squared_share_otherwise():
    # a 2 x 2 grid: the object covers the left column, the background the right one
    masks = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])  # (B=1, M=1, 2, 2)
    valid = torch.ones(1, 1, dtype=torch.bool)
    left = torch.tensor([1.0, 0.0, 1.0, 0.0])
    grouped = torch.stack([left / 2, (1 - left) / 2, left / 2, (1 - left) / 2])[None]  # (1, 4, 4)
    assert region_loss([grouped], masks, valid) == 0
    uniform = torch.full((1, 4, 4), 0.25)  # every position gives each region half its attention
    torch.testing.assert_close(region_loss([uniform], masks, valid), torch.tensor(0.25))
    # an object that does not count leaves one region, the whole image: nothing to ask
    assert region_loss([uniform], masks, torch.zeros(1, 1, dtype=torch.bool)) == 0
