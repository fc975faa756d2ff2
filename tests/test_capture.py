"""Aggregated maps against the naive store-everything reference, and the capture's guarantees."""

from __future__ import annotations

import pytest
import torch
from conftest import StoreAllReference, generator, normalize

from free_atm.attention import AttentionAggregator, CaptureConfig, capture_cross_attention
from free_atm.tokens import object_token_indices

PROMPTS = ["a red circle and a blue square", "a dog with a teddy bear"]
OBJECTS = [["circle", "square"], ["dog", "teddy bear"]]


def reference_for(pipe, prompts, objects, images_per_prompt=1):
    tokens = [
        [object_token_indices(pipe.tokenizer, prompt, o) for o in objs]
        for prompt, objs in zip(prompts, objects)
        for _ in range(images_per_prompt)
    ]
    return StoreAllReference(pipe.unet, tokens)


def raw_maps(pipe, prompts, objects, config=None, **call):
    """The aggregator's mean maps, from a capture around the parent pipeline's call."""
    from free_atm.tokens import object_token_weights

    n = call.get("num_images_per_prompt", 1)
    weights = object_token_weights([(pipe.tokenizer, prompts)], objects, 77).repeat_interleave(n, 0)
    aggregator = AttentionAggregator(weights, config or CaptureConfig())
    with capture_cross_attention(pipe.unet, aggregator):
        super(type(pipe), pipe).__call__(prompts, **call)
    return aggregator


@pytest.mark.parametrize("guidance_scale", [7.5, 1.0])
def test_aggregated_maps_equal_store_all_reference(sd_pipe, guidance_scale):
    reference = reference_for(sd_pipe, PROMPTS, OBJECTS, images_per_prompt=2)
    call = dict(num_inference_steps=3, height=64, width=64, guidance_scale=guidance_scale, num_images_per_prompt=2)
    aggregator = raw_maps(sd_pipe, PROMPTS, OBJECTS, generator=generator(), **call)
    expected = reference.mean((32, 32))
    assert aggregator.count == len(reference.records) == 3 * 7  # 7 cross-attention layers, 3 steps
    torch.testing.assert_close(aggregator.result(), expected, atol=1e-5, rtol=1e-5)


def test_capture_projects_no_query_or_key_again(sd_pipe):
    """The maps come from the query and key that the stock processor projects itself: each cross-attention
    layer's to_q and to_k run once per U-Net call (one a step, both guidance halves batched), as without."""
    from free_atm.attention import cross_attention_processor_names

    names = cross_attention_processor_names(sd_pipe.unet)
    layers = [sd_pipe.unet.get_submodule(name.removesuffix(".processor")) for name in names]
    projections = [module for layer in layers for module in (layer.to_q, layer.to_k)]
    calls = []
    handles = [module.register_forward_hook(lambda *args: calls.append(1)) for module in projections]
    try:
        aggregator = raw_maps(sd_pipe, PROMPTS, OBJECTS, num_inference_steps=2, height=64, width=64)
    finally:
        for handle in handles:
            handle.remove()
    assert aggregator.count == 2 * len(layers) and len(calls) == 2 * len(projections)


def test_pipeline_output_maps_are_normalised_reference_maps(sd_pipe):
    reference = reference_for(sd_pipe, PROMPTS, OBJECTS)
    out = sd_pipe(PROMPTS, objects=OBJECTS, num_inference_steps=2, height=64, width=64, generator=generator())
    expected = normalize(reference.mean((32, 32)))
    for i in range(2):
        torch.testing.assert_close(torch.from_numpy(out.attention_maps[i]), expected[i], atol=1e-5, rtol=1e-5)
        assert out.masks[i].shape == (2, 64, 64) and out.masks[i].dtype == bool
        assert out.boxes[i].shape == (2, 4)
    assert out.objects == OBJECTS


@pytest.mark.parametrize(
    "config",
    [
        CaptureConfig(layer_scales=(2,)),
        CaptureConfig(layer_scales=(1, 4)),
        CaptureConfig(timestep_range=(0, 500)),
        CaptureConfig(attention_resolution=8, timestep_range=(400, 1000), layer_scales=(1,)),
    ],
)
def test_layer_and_timestep_selection_match_reference(sd_pipe, config):
    reference = reference_for(sd_pipe, PROMPTS, OBJECTS)
    aggregator = raw_maps(sd_pipe, PROMPTS, OBJECTS, config, num_inference_steps=4, height=64, width=64)
    size = (config.attention_resolution,) * 2 if config.attention_resolution else (32, 32)
    expected = reference.mean(size, scales=config.layer_scales, window=config.timestep_range)
    torch.testing.assert_close(aggregator.result(), expected, atol=1e-5, rtol=1e-5)


def test_sd2_upcast_attention_maps_match_reference():
    from free_atm.diffusion import FreeATMDiffusionPipeline
    from free_atm.testing import tiny_sd_components

    pipe = FreeATMDiffusionPipeline(**tiny_sd_components(upcast_attention=True))
    pipe.set_progress_bar_config(disable=True)
    assert any(m.upcast_attention for m in pipe.unet.modules() if hasattr(m, "upcast_attention"))
    reference = reference_for(pipe, PROMPTS, OBJECTS)
    aggregator = raw_maps(pipe, PROMPTS, OBJECTS, num_inference_steps=2, height=64, width=64)
    torch.testing.assert_close(aggregator.result(), reference.mean((32, 32)), atol=1e-5, rtol=1e-5)


def test_each_map_belongs_to_its_own_image(sd_pipe):
    """A prompt captured inside a batch gives the same maps as the same prompt and noise alone."""
    latents = torch.randn(4, 4, 32, 32, generator=generator(3))
    call = dict(num_inference_steps=2, height=64, width=64, output_type="np")
    batched = sd_pipe(PROMPTS, objects=OBJECTS, num_images_per_prompt=2, latents=latents, **call)
    for i in range(4):
        prompt = i // 2
        alone = sd_pipe(PROMPTS[prompt], objects=OBJECTS[prompt], latents=latents[i : i + 1], **call)
        assert batched.objects[i] == OBJECTS[prompt]
        torch.testing.assert_close(
            torch.from_numpy(batched.attention_maps[i]),
            torch.from_numpy(alone.attention_maps[0]),
            atol=1e-4,
            rtol=1e-4,
        )


def test_aggregator_state_does_not_grow_with_steps(sd_pipe):
    sizes = []
    for steps in (2, 6):
        aggregator = raw_maps(sd_pipe, PROMPTS, OBJECTS, num_inference_steps=steps, height=64, width=64)
        tensors = [v for v in vars(aggregator).values() if torch.is_tensor(v)]
        # the containers of kept maps (CaptureConfig(keep=...)) stay empty unless asked for
        assert not any(v for v in vars(aggregator).values() if isinstance(v, (list, dict)))
        sizes.append(sum(t.numel() for t in tensors))
        assert aggregator.count == steps * 7
    assert sizes[0] == sizes[1]


def test_processors_restored_after_call(sd_pipe):
    before = sd_pipe.unet.attn_processors
    sd_pipe(PROMPTS[0], objects=OBJECTS[0], num_inference_steps=1, height=64, width=64)
    after = sd_pipe.unet.attn_processors
    assert before.keys() == after.keys() and all(after[k] is before[k] for k in before)


def test_processor_replaced_mid_call_raises(sd_pipe):
    def slice_attention(pipe, step, timestep, kwargs):
        pipe.enable_attention_slicing(1)
        return kwargs

    with pytest.raises(RuntimeError, match="replaced during the call"):
        sd_pipe(
            PROMPTS[0],
            objects=OBJECTS[0],
            num_inference_steps=2,
            height=64,
            width=64,
            callback_on_step_end=slice_attention,
        )
    assert not any(type(p).__name__ == "AttentionCaptureProcessor" for p in sd_pipe.unet.attn_processors.values())


def test_a_prompt_with_no_object_gets_maps_of_no_object(sd_pipe):
    def call(objects):
        seeded = torch.Generator().manual_seed(0)
        return sd_pipe(PROMPTS[0], objects=objects, num_inference_steps=2, height=64, width=64, generator=seeded)

    out, named = call([[]]), call([OBJECTS[0]])
    assert out.attention_maps[0].shape == (0, *named.attention_maps[0].shape[1:])
    assert out.masks[0].shape == (0, 64, 64)
    assert out.images[0].tobytes() == named.images[0].tobytes()  # the capture does not change the image
    assert out.boxes[0].shape == (0, 4) and len(out.confidence[0]) == 0


def test_window_that_excludes_every_step_is_an_error(sd_pipe):
    with pytest.raises(ValueError, match="no attention map was captured.*widen the window"):
        sd_pipe(
            PROMPTS[0],
            objects=OBJECTS[0],
            num_inference_steps=2,
            height=64,
            width=64,
            capture_config={"timestep_range": (2000, 3000)},
        )


def test_sdxl_maps_match_reference(sdxl_pipe):
    reference = reference_for(sdxl_pipe, PROMPTS, OBJECTS)
    out = sdxl_pipe(PROMPTS, objects=OBJECTS, num_inference_steps=2, height=64, width=64, generator=generator())
    expected = normalize(reference.mean((32, 32)))
    for i in range(2):
        torch.testing.assert_close(torch.from_numpy(out.attention_maps[i]), expected[i], atol=1e-5, rtol=1e-5)
    assert out.masks[0].shape == (2, 64, 64)


def test_annotate_maps_equal_reference_over_its_unet_calls(sd_pipe):
    """annotate() noises the image to each timestep, runs the UNet with the caption and averages the maps."""
    from PIL import Image

    from free_atm.world import render_scene

    scenes = [render_scene(s) for s in (1, 2)]
    objects = [s.objects[:2] for s in scenes]  # the reference stacks images: the same object count each
    reference = reference_for(sd_pipe, [s.caption for s in scenes], objects)
    out = sd_pipe.annotate(
        [Image.fromarray(s.image) for s in scenes],
        [s.caption for s in scenes],
        objects,
        timesteps=(100, 700),
        noise_draws=2,
        generator=generator(1),
    )
    assert sorted({t for t, _, _ in reference.records}) == [100.0, 700.0] and len(reference.records) == 4 * 7
    expected = normalize(reference.mean((32, 32)))
    for i in range(2):
        torch.testing.assert_close(torch.from_numpy(out.attention_maps[i]), expected[i], atol=1e-5, rtol=1e-5)
        assert out.masks[i].shape == (2, 64, 64) and out.objects[i] == objects[i]
    with pytest.raises(ValueError, match="one prompt and one object list per image"):
        sd_pipe.annotate([Image.fromarray(scenes[0].image)], [scenes[0].caption] * 2, objects)
