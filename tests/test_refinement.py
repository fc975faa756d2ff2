"""Self-attention refinement against an explicit computation, and its settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import generator, normalize

from free_atm import CaptureConfig
from free_atm.attention.refinement import refine_maps, resize_attention

PROMPT, OBJECTS = "a red circle and a blue square", ["red circle", "blue square"]
CALL = dict(num_inference_steps=3, height=64, width=64, output_type="np")


class ExplicitSelfAttention:
    """Stores, at every call of every self-attention layer at ``scale`` 1 of the tiny UNet, the conditional
    half's head-averaged ``softmax(Q K^T / sqrt(d))``, written out from the layer's weights."""

    def __init__(self, unet, names: list[str]) -> None:
        self.records: list[torch.Tensor] = []
        self.handles = [unet.get_submodule(name).register_forward_pre_hook(self.record) for name in names]

    def record(self, attn, args) -> None:
        states = args[0][args[0].shape[0] // 2 :]  # the conditional half of the guided batch
        heads, dim = attn.heads, attn.to_q.out_features // attn.heads
        query = attn.to_q(states).view(*states.shape[:2], heads, dim).transpose(1, 2)
        key = attn.to_k(states).view(*states.shape[:2], heads, dim).transpose(1, 2)
        scores = torch.einsum("bhqd,bhkd->bhqk", query.double(), key.double()) / dim**0.5
        self.records.append(torch.softmax(scores, -1).mean(1))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def captured(pipe, config: CaptureConfig):
    """The aggregator of one capture around the parent pipeline's call (the stock call, maps kept)."""
    from free_atm.attention import AttentionAggregator, capture_cross_attention
    from free_atm.tokens import object_token_weights

    weights = object_token_weights([(pipe.tokenizer, [PROMPT])], [OBJECTS], 77)
    aggregator = AttentionAggregator(weights, config)
    with capture_cross_attention(pipe.unet, aggregator):
        images = super(type(pipe), pipe).__call__(PROMPT, generator=generator(), **CALL).images
    return aggregator, images


@pytest.mark.parametrize("power", [1, 3])
def test_refined_maps_are_the_explicit_self_attention_power_applied_to_the_raw_maps(sd_pipe, power):
    names = [
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1",
        "up_blocks.2.attentions.0.transformer_blocks.0.attn1",
        "up_blocks.2.attentions.1.transformer_blocks.0.attn1",
    ]  # the tiny UNet's self-attention at scale 1 (32 x 32 latent)
    raw, stock = captured(sd_pipe, CaptureConfig())
    explicit = ExplicitSelfAttention(sd_pipe.unet, names)
    try:
        config = CaptureConfig(refinement="self_attention", refinement_power=power, refinement_scales=(1,))
        refined, images = captured(sd_pipe, config)
    finally:
        explicit.remove()
    assert len(explicit.records) == 3 * len(names)  # three steps: the running sum must equal storing them all
    attention = torch.stack(explicit.records).mean(0)[0]  # (1024, 1024)
    maps = raw.result()[0].double().flatten(1).T  # (1024, 2)
    for _ in range(power):
        maps = attention @ maps
    torch.testing.assert_close(refined.result()[0], maps.T.reshape(2, 32, 32).float(), atol=1e-7, rtol=1e-5)
    np.testing.assert_array_equal(images, stock)  # the stock output is untouched


def test_the_pipeline_returns_refined_maps_normalised(sd_pipe):
    config = CaptureConfig(refinement="self_attention", refinement_power=2)
    aggregator, _ = captured(sd_pipe, config)
    out = sd_pipe(PROMPT, objects=OBJECTS, generator=generator(), capture_config=config, **CALL)
    torch.testing.assert_close(torch.from_numpy(out.attention_maps[0]), normalize(aggregator.result()[0]))


def test_refinement_at_every_default_scale_runs_and_keeps_one_matrix(sd_pipe):
    aggregator, _ = captured(sd_pipe, CaptureConfig(refinement="self_attention"))
    attention = aggregator.self_attention
    assert attention.scales == {1, 2, 4} and attention.grid == (32, 32)  # every layer has at most 1,024 positions
    assert attention.count == 3 * 7 and attention.sums.shape == (1, 1024, 1024)
    torch.testing.assert_close(attention.result().sum(-1), torch.ones(1, 1024))
    assert aggregator.result().shape == (1, 2, 32, 32)


def test_resizing_an_attention_keeps_it_a_distribution_and_uniform_stays_uniform():
    uniform = torch.full((1, 16, 16), 1 / 16)
    torch.testing.assert_close(resize_attention(uniform, (4, 4), (8, 8)), torch.full((1, 64, 64), 1 / 64))
    random = torch.rand(2, 16, 16).softmax(-1)
    resized = resize_attention(random, (4, 4), (8, 8))
    torch.testing.assert_close(resized.sum(-1), torch.ones(2, 64))
    assert resize_attention(random, (4, 4), (4, 4)) is random


def test_refining_along_the_identity_changes_nothing_and_along_uniform_flattens():
    maps = torch.rand(1, 2, 4, 4)
    torch.testing.assert_close(refine_maps(maps, torch.eye(16)[None], (4, 4), 3), maps)
    flat = refine_maps(maps, torch.full((1, 16, 16), 1 / 16), (4, 4), 1)
    torch.testing.assert_close(flat, maps.mean((2, 3), keepdim=True).expand_as(maps))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"refinement": "crf"}, "refinement must be one of ('none', 'self_attention'), got 'crf'"),
        ({"refinement_power": 0}, "refinement_power must be an int in [1, 64], got 0"),
        ({"refinement_power": 1.5}, "refinement_power must be an int in [1, 64], got 1.5"),
        ({"refinement_power": 10**9}, "refinement_power must be an int in [1, 64], got 1000000000"),
        ({"refinement_scales": (0,)}, "refinement_scales must be positive ints or None, got (0,)"),
    ],
)
def test_bad_refinement_settings_are_value_errors_naming_the_value(values, message):
    with pytest.raises(ValueError) as error:
        CaptureConfig(**values)
    assert str(error.value) == message


def test_a_scale_the_unet_lacks_is_named_before_generating(sd_pipe):
    config = {"refinement": "self_attention", "refinement_scales": (1, 8)}
    with pytest.raises(ValueError, match=r"refinement_scales \[8\] match no self-attention layer.*scales \[1, 2, 4\]"):
        sd_pipe(PROMPT, objects=OBJECTS, capture_config=config, **CALL)


def test_a_unet_without_self_attention_at_a_scale_or_at_all_says_so():
    from diffusers import UNet2DConditionModel

    from free_atm.attention import AttentionAggregator, capture_cross_attention
    from free_atm.models import load_pipeline

    shapes = load_pipeline("shapes")  # self-attention at the 16 x 16, 8 x 8 and 4 x 4 grids of its 16 x 16 latent
    with pytest.raises(ValueError, match=r"refinement_scales \[8\] match no.*at scales \[1, 2, 4\]"):
        shapes(
            "a red circle",
            objects=["red circle"],
            capture_config={"refinement_scales": (8,), "refinement": "self_attention"},
        )
    text_only = UNet2DConditionModel(
        block_out_channels=(16, 32),
        norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8,
        attention_head_dim=8,
        layers_per_block=1,
        only_cross_attention=True,
        mid_block_type=None,
    )
    aggregator = AttentionAggregator(torch.ones(1, 4, 1), CaptureConfig(refinement="self_attention"))
    no_self_attention = "needs self-attention layers; this UNet2DConditionModel has none"
    with pytest.raises(ValueError, match=no_self_attention), capture_cross_attention(text_only, aggregator):
        pass


def test_refinement_settings_round_trip_through_save_pretrained(sd_pipe, tmp_path):
    from free_atm import FreeATMDiffusionPipeline

    saved = sd_pipe.capture_config
    try:
        sd_pipe.set_capture_config(refinement="self_attention", refinement_power=2, refinement_scales=(1, 2))
        sd_pipe.save_pretrained(tmp_path)
    finally:
        sd_pipe.set_capture_config(saved)
    loaded = FreeATMDiffusionPipeline.from_pretrained(tmp_path)
    assert loaded.capture_config == CaptureConfig(
        refinement="self_attention", refinement_power=2, refinement_scales=(1, 2)
    )
