"""The Free-ATM pipelines keep their parents' behaviour, signature and loading paths."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import generator
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

from free_atm import CaptureConfig, FreeATMDiffusionPipeline, custom_pipeline_path
from free_atm.diffusion import FreeATMStableDiffusionPipelineOutput

PROMPT, OBJECTS = "a dog with a teddy bear in the park", ["dog", "teddy bear"]
CALL = dict(num_inference_steps=3, height=64, width=64, output_type="np")


def parent_of(pipe):
    parent_class = StableDiffusionXLPipeline if "XL" in type(pipe).__name__ else StableDiffusionPipeline
    parent = parent_class(**pipe.components)
    parent.set_progress_bar_config(disable=True)
    return parent


def noise_predictions(pipe, **call):
    predictions = []
    hook = pipe.unet.register_forward_hook(lambda module, args, output: predictions.append(output[0].clone()))
    try:
        images = pipe(**call).images
    finally:
        hook.remove()
    return images, torch.stack(predictions)


@pytest.mark.parametrize("guidance_scale", [7.5, 1.0])
def test_images_and_noise_predictions_equal_parent(sd_pipe, guidance_scale):
    call = dict(prompt=PROMPT, guidance_scale=guidance_scale, **CALL)
    expected_images, expected_noise = noise_predictions(parent_of(sd_pipe), generator=generator(), **call)
    images, noise = noise_predictions(sd_pipe, generator=generator(), objects=OBJECTS, **call)
    np.testing.assert_array_equal(images, expected_images)
    torch.testing.assert_close(noise, expected_noise, atol=0, rtol=0)


def test_sdxl_images_equal_parent(sdxl_pipe):
    expected = parent_of(sdxl_pipe)(PROMPT, generator=generator(), **CALL).images
    out = sdxl_pipe(PROMPT, objects=OBJECTS, generator=generator(), **CALL)
    np.testing.assert_array_equal(out.images, expected)
    assert out.masks[0].shape == (2, 64, 64)


def test_return_dict_false_keeps_parent_tuple_first(sd_pipe):
    out = sd_pipe(PROMPT, objects=OBJECTS, generator=generator(), return_dict=False, **CALL)
    expected = parent_of(sd_pipe)(PROMPT, generator=generator(), return_dict=False, **CALL)
    assert len(out) == len(expected) + 5
    np.testing.assert_array_equal(out[0], expected[0])
    assert out[1] == expected[1] and out[2] == [OBJECTS]
    assert out[3][0].shape == (2, 32, 32) and out[4][0].shape == (2, 64, 64) and out[5][0].shape == (2, 4)
    assert out[6][0].shape == (2,)  # the confidences


def test_dataclass_output_is_the_parents_output_type(sd_pipe):
    out = sd_pipe(PROMPT, objects=OBJECTS, **CALL)
    assert isinstance(out, FreeATMStableDiffusionPipelineOutput)
    from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput

    assert isinstance(out, StableDiffusionPipelineOutput) and out.nsfw_content_detected is None


def test_no_objects_means_plain_images(sd_pipe):
    out = sd_pipe(PROMPT, generator=generator(), **CALL)
    np.testing.assert_array_equal(out.images, parent_of(sd_pipe)(PROMPT, generator=generator(), **CALL).images)
    assert out.objects == [[]] and out.masks[0].shape[0] == 0


def test_prompts_carrying_objects_supply_them(sd_pipe):
    class ObjectPrompt(str):
        objects = OBJECTS

    out = sd_pipe(ObjectPrompt(PROMPT), **CALL)
    assert out.objects == [OBJECTS]


def test_callbacks_tensor_inputs_and_interrupt(sd_pipe):
    seen = []

    def callback(pipe, step, timestep, kwargs):
        seen.append((step, kwargs["latents"].shape, kwargs["prompt_embeds"].shape))
        if step == 1:
            pipe._interrupt = True
        return kwargs

    call = dict(
        prompt=PROMPT,
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
        **CALL,
    )
    call["num_inference_steps"] = 5
    out = sd_pipe(objects=OBJECTS, generator=generator(), **call)
    assert [s[0] for s in seen] == [0, 1]
    assert seen[0][2] == (2, 77, 32)  # unconditional + conditional
    seen.clear()
    np.testing.assert_array_equal(out.images, parent_of(sd_pipe)(generator=generator(), **call).images)
    assert out.attention_maps[0].shape == (2, 32, 32)


@pytest.mark.parametrize(
    ("feature", "maps_unchanged"),
    [
        (lambda p: p.enable_attention_slicing(1), True),
        (lambda p: p.enable_freeu(s1=0.9, s2=0.2, b1=1.2, b2=1.4), False),
        (lambda p: p.fuse_qkv_projections(), True),
        (lambda p: p.vae.enable_slicing(), True),
        (lambda p: p.vae.enable_tiling(), True),
    ],
    ids=["attention_slicing", "freeu", "fused_qkv", "vae_slicing", "vae_tiling"],
)
def test_parent_features_keep_working(feature, maps_unchanged, sd_pipe):
    call = dict(prompt=[PROMPT] * 2, generator=generator(), **{**CALL, "width": 160})  # wider than a VAE tile
    plain_maps = sd_pipe(objects=[OBJECTS] * 2, **call).attention_maps
    parent = parent_of(sd_pipe)
    feature(sd_pipe)
    call["generator"] = generator()
    out = sd_pipe(objects=[OBJECTS] * 2, **call)
    call["generator"] = generator()
    np.testing.assert_allclose(out.images, parent(**call).images, atol=1e-6)
    for maps, plain in zip(out.attention_maps, plain_maps):
        assert maps.shape == (2, 32, 80) and maps.max() == pytest.approx(1.0) and maps.min() == 0.0
        if maps_unchanged:
            np.testing.assert_allclose(maps, plain, atol=1e-4)
        else:
            assert np.abs(maps - plain).max() > 1e-3


def test_ip_adapter_processors_keep_working(sd_pipe):
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
    from diffusers.models.embeddings import ImageProjection, MultiIPAdapterImageProjection

    unet = sd_pipe.unet
    torch.manual_seed(0)
    processors = {}
    for name, processor in unet.attn_processors.items():
        module = unet.get_submodule(name.removesuffix(".processor"))
        if module.is_cross_attention:
            processors[name] = IPAdapterAttnProcessor2_0(module.inner_dim, cross_attention_dim=32, num_tokens=(4,))
        else:
            processors[name] = processor
    unet.set_attn_processor(processors)
    unet.encoder_hid_proj = MultiIPAdapterImageProjection(
        [ImageProjection(image_embed_dim=16, cross_attention_dim=32, num_image_text_embeds=4)]
    )
    unet.config.encoder_hid_dim_type = "ip_image_proj"
    embeds = [torch.randn(2, 1, 16, generator=generator(5))]  # negative and positive halves
    call = dict(prompt=PROMPT, ip_adapter_image_embeds=embeds, **CALL)
    expected = parent_of(sd_pipe)(generator=generator(), **call).images
    zero_scale = parent_of(sd_pipe)
    out = sd_pipe(generator=generator(), objects=OBJECTS, **call)
    np.testing.assert_array_equal(out.images, expected)
    for processor in unet.attn_processors.values():
        if isinstance(processor, IPAdapterAttnProcessor2_0):
            processor.scale = [0.0]
    without_image = zero_scale(generator=generator(), **call).images
    assert np.abs(without_image - expected).max() > 1e-4  # the image prompt did steer the output
    assert out.attention_maps[0].shape == (2, 32, 32)


def test_ip_adapter_masks_reach_the_wrapped_processor(sd_pipe):
    import inspect

    from free_atm.attention import AttentionAggregator, AttentionCaptureProcessor

    received = {}

    class Recorder:
        def __call__(
            self,
            attn,
            hidden_states,
            encoder_hidden_states=None,
            attention_mask=None,
            temb=None,
            ip_adapter_masks=None,
        ):
            received["masks"] = ip_adapter_masks
            return hidden_states

    wrapper = AttentionCaptureProcessor(Recorder(), AttentionAggregator(torch.zeros(1, 77, 0), CaptureConfig()))
    assert "ip_adapter_masks" in inspect.signature(wrapper.__call__).parameters
    module = sd_pipe.unet.get_submodule(
        next(n for n in sd_pipe.unet.attn_processors if "attn2" in n).removesuffix(".processor")
    )
    module.set_processor(wrapper)
    module(torch.zeros(1, 4, module.query_dim), torch.zeros(1, 77, 32), ip_adapter_masks="masks!")
    assert received["masks"] == "masks!"


def test_output_type_latent_gives_masks_at_image_resolution(sd_pipe):
    out = sd_pipe(PROMPT, objects=OBJECTS, num_inference_steps=2, height=64, width=96, output_type="latent")
    assert out.images.shape == (1, 4, 32, 48)
    assert out.attention_maps[0].shape == (2, 32, 48) and out.masks[0].shape == (2, 64, 96)


def test_bad_objects_are_clear_errors(sd_pipe):
    with pytest.raises(ValueError, match=r"object 'cat' does not occur in prompt 'a dog with a teddy bear"):
        sd_pipe(PROMPT, objects=["dog", "cat"], **CALL)
    with pytest.raises(ValueError, match="got 1 object lists for 2 prompts"):
        sd_pipe([PROMPT, PROMPT], objects=[OBJECTS], **CALL)
    with pytest.raises(ValueError, match="cannot be located in `prompt_embeds`"):
        sd_pipe(prompt_embeds=torch.zeros(1, 77, 32), objects=OBJECTS, **CALL)
    with pytest.raises(ValueError, match="unknown capture settings \\['treshold'\\]"):
        sd_pipe(PROMPT, objects=OBJECTS, capture_config={"treshold": 0.5}, **CALL)


def test_capture_config_saved_loaded_and_overridden(sd_pipe, tmp_path):
    sd_pipe.set_capture_config(threshold_method="competition", layer_scales=(1, 2))
    sd_pipe.save_pretrained(tmp_path)
    loaded = FreeATMDiffusionPipeline.from_pretrained(tmp_path)
    assert loaded.capture_config == CaptureConfig(threshold_method="competition", layer_scales=(1, 2))
    loaded.set_progress_bar_config(disable=True)
    out = loaded(PROMPT, objects=OBJECTS, **CALL)
    assert not (out.masks[0][0] & out.masks[0][1]).any()  # competition: no overlap
    out = loaded(PROMPT, objects=OBJECTS, capture_config={"attention_resolution": 8}, **CALL)
    assert out.attention_maps[0].shape == (2, 8, 8)
    assert loaded.capture_config.attention_resolution is None  # per-call override is not saved


def test_custom_pipeline_loads_a_stock_folder_offline(sd_pipe, tmp_path):
    parent_of(sd_pipe).save_pretrained(tmp_path)
    pipe = DiffusionPipeline.from_pretrained(tmp_path, custom_pipeline=custom_pipeline_path(), trust_remote_code=True)
    assert type(pipe).__name__ == "FreeATMDiffusionPipeline" and pipe.capture_config == CaptureConfig()
    pipe.set_progress_bar_config(disable=True)
    assert pipe(PROMPT, objects=OBJECTS, **CALL).masks[0].shape == (2, 64, 64)


def test_custom_pipeline_sdxl_loads_offline(sdxl_pipe, tmp_path):
    parent_of(sdxl_pipe).save_pretrained(tmp_path)
    pipe = DiffusionPipeline.from_pretrained(
        tmp_path, custom_pipeline=custom_pipeline_path("free_atm_sdxl"), trust_remote_code=True
    )
    assert type(pipe).__name__ == "FreeATMStableDiffusionXLPipeline"


HUB_USER = """
import sys
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
from free_atm import FreeATMDiffusionPipeline, custom_pipeline_path
from free_atm.testing import tiny_sd_components, tiny_sdxl_components

root = sys.argv[1]
StableDiffusionPipeline(**tiny_sd_components()).save_pretrained(root + "/sd")
StableDiffusionXLPipeline(**tiny_sdxl_components()).save_pretrained(root + "/sdxl")
sd = DiffusionPipeline.from_pretrained(root + "/sd", custom_pipeline=custom_pipeline_path(), trust_remote_code=True)
xl = DiffusionPipeline.from_pretrained(
    root + "/sdxl", custom_pipeline=custom_pipeline_path("free_atm_sdxl"), trust_remote_code=True
)
print(type(sd).__name__, type(xl).__name__)
ours = FreeATMDiffusionPipeline(**tiny_sd_components())
ours.set_capture_config(threshold_method="competition")
ours.save_pretrained(root + "/saved")
"""

HUB_LOADER = """
import sys
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained(sys.argv[1] + "/saved", trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
out = pipe("a dog with a teddy bear", objects=["dog", "teddy bear"], num_inference_steps=2, height=64, width=64)
print(type(pipe).__name__, pipe.capture_config.threshold_method, out.masks[0].shape)
"""


def test_two_families_load_in_one_process_and_a_saved_pipeline_loads_without_free_atm_imported(tmp_path):
    """As a Hub user works: SD then SDXL through ``custom_pipeline`` in one process, and a configured
    pipeline's folder loaded in a fresh process by plain ``DiffusionPipeline.from_pretrained``."""
    import subprocess
    import sys

    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for script, expected in (
        (HUB_USER, "FreeATMDiffusionPipeline FreeATMStableDiffusionXLPipeline"),
        (HUB_LOADER, "FreeATMDiffusionPipeline competition (2, 64, 64)"),
    ):
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)], env=environment, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == expected
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_free_atm", "FreeATMDiffusionPipeline"]
    assert (tmp_path / "saved" / "pipeline_free_atm.py").is_file()


def test_from_pipe_switches_a_stock_pipeline(sd_pipe):
    pipe = FreeATMDiffusionPipeline.from_pipe(parent_of(sd_pipe))
    assert pipe.unet is sd_pipe.unet and pipe.capture_config == CaptureConfig()


@pytest.mark.parametrize(
    ("pipeline", "parent"),
    [
        ("FreeATMDiffusionPipeline", StableDiffusionPipeline),
        ("FreeATMStableDiffusionXLPipeline", StableDiffusionXLPipeline),
    ],
)
def test_call_signature_is_the_parents_plus_capture_arguments(pipeline, parent):
    import inspect

    import free_atm

    ours = inspect.signature(getattr(free_atm, pipeline).__call__).parameters
    theirs = inspect.signature(parent.__call__).parameters
    assert list(ours) == [
        *[n for n in theirs if n != "kwargs"],
        "objects",
        "capture_config",
        "allow_absent_objects",
        "kwargs",
    ]
    assert all(ours[n].default == theirs[n].default for n in theirs if n != "kwargs")
