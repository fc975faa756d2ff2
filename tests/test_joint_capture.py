"""SD3 and Flux: maps against a hand-written joint-attention reference, parity with the stock pipelines,
block selection, errors, and loading through ``custom_pipeline``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import generator, normalize
from diffusers import DiffusionPipeline, FluxPipeline, StableDiffusion3Pipeline
from joint_reference import JointReference

from free_atm import CaptureConfig, custom_pipeline_path

# every word is one token of the tiny tokenizers: CLIP puts word i at position 1 + i (after its BOS),
# T5 at position i (no BOS), and SD3 places T5's positions after CLIP's 77
PROMPTS = ["a dog with a teddy bear in the park", "a red circle and a blue square"]
OBJECTS = [["dog", "teddy bear"], ["circle", "square"]]
WORDS = [[[1], [4, 5]], [[2], [6]]]
SD3_CALL = dict(height=32, width=32, num_inference_steps=2, max_sequence_length=32, output_type="np")
FLUX_CALL = dict(height=32, width=32, num_inference_steps=2, max_sequence_length=24, output_type="np")
GRID, LATENT = (8, 8), (16, 16)


def positions(family: str) -> list[list[list[int]]]:
    if family == "sd3":
        return [[[1 + i for i in w] + [77 + i for i in w] for w in words] for words in WORDS]
    return WORDS


def parent_of(pipe):
    parent_class = FluxPipeline if "Flux" in type(pipe).__name__ else StableDiffusion3Pipeline
    parent = parent_class(**pipe.components)
    parent.set_progress_bar_config(disable=True)
    return parent


def reference_run(pipe, call, **extra):
    """The stock pipeline with every joint layer computed by hand; its images and the reference."""
    reference = JointReference(pipe.transformer, num_images=len(PROMPTS))
    try:
        images = parent_of(pipe)(PROMPTS, generator=generator(), **call, **extra).images
    finally:
        reference.restore()
    return images, reference


@pytest.fixture(params=["sd3", "flux"])
def family(request):
    return request.param


@pytest.fixture
def joint_pipe(family, request):
    return request.getfixturevalue(f"{family}_pipe")


def call_for(family):
    return SD3_CALL if family == "sd3" else FLUX_CALL


@pytest.mark.parametrize("method", ["joint", "text", "concept"])
def test_maps_equal_hand_written_reference(family, joint_pipe, method):
    call = call_for(family)
    config = {"method": "concept"} if method == "concept" else {"normalization": method}
    out = joint_pipe(PROMPTS, objects=OBJECTS, capture_config=config, generator=generator(), **call)
    stock = parent_of(joint_pipe)(PROMPTS, generator=generator(), **call).images
    reference_images, reference = reference_run(joint_pipe, call)
    np.testing.assert_allclose(reference_images, stock, atol=1e-5)  # the hand-written layers are the model's
    np.testing.assert_array_equal(out.images, stock)  # capture leaves the images alone
    expected = normalize(reference.maps(positions(family), GRID, LATENT, method=method))
    layers = 2 if family == "sd3" else 3
    assert len(reference.records) == layers * call["num_inference_steps"]
    # the concept maps read the stock layer's outputs (fused SDPA), the reference's are an explicit product
    atol = 1e-4 if method == "concept" else 1e-5
    for i in range(len(PROMPTS)):
        torch.testing.assert_close(torch.from_numpy(out.attention_maps[i]), expected[i], atol=atol, rtol=1e-4)
        assert out.masks[i].shape == (2, 32, 32) and out.boxes[i].shape == (2, 4)


def test_flux_true_guidance_counts_the_conditional_call_only(flux_pipe):
    """True classifier-free guidance runs the negative prompt as a second call at each timestep."""
    extra = dict(negative_prompt=["a cat", "a bus"], true_cfg_scale=3.0)
    out = flux_pipe(PROMPTS, objects=OBJECTS, generator=generator(), **FLUX_CALL, **extra)
    images, reference = reference_run(flux_pipe, FLUX_CALL, **extra)
    assert sum(r["repeat"] == 1 for r in reference.records) == 3 * 2  # the negative calls exist
    np.testing.assert_allclose(images, out.images, atol=1e-5)
    expected = normalize(reference.maps(WORDS, GRID, LATENT))
    for i in range(len(PROMPTS)):
        torch.testing.assert_close(torch.from_numpy(out.attention_maps[i]), expected[i], atol=1e-5, rtol=1e-4)


def test_sd3_without_t5_attends_to_clip_alone(sd3_pipe):
    """SD3 loaded without T5 and called with ``max_sequence_length=0``: the text is CLIP's positions only."""
    pipe = type(sd3_pipe)(**{**sd3_pipe.components, "text_encoder_3": None, "tokenizer_3": None})
    pipe.set_progress_bar_config(disable=True)
    call = {**SD3_CALL, "max_sequence_length": 0}
    out = pipe(PROMPTS, objects=OBJECTS, generator=generator(), **call)
    images, reference = reference_run(pipe, call)
    np.testing.assert_allclose(images, out.images, atol=1e-5)
    assert reference.records[0]["probs"].shape[-1] == 77
    clip_positions = [[[1 + i for i in w] for w in words] for words in WORDS]
    expected = normalize(reference.maps(clip_positions, GRID, LATENT))
    for i in range(len(PROMPTS)):
        torch.testing.assert_close(torch.from_numpy(out.attention_maps[i]), expected[i], atol=1e-5, rtol=1e-4)


def test_blocks_select_layers_and_timesteps_still_apply(sd3_pipe):
    config = CaptureConfig(blocks=(1,), timestep_range=(0, 900))
    out = sd3_pipe(PROMPTS, objects=OBJECTS, capture_config=config, generator=generator(), **SD3_CALL)
    _, reference = reference_run(sd3_pipe, SD3_CALL)
    reference.records = [r for r in reference.records if r["timestep"] <= 900]
    assert 0 < len(reference.records) < 4  # the window drops the first step
    expected = normalize(reference.maps(positions("sd3"), GRID, LATENT, blocks=[1]))
    torch.testing.assert_close(torch.from_numpy(out.attention_maps[0]), expected[0], atol=1e-5, rtol=1e-4)


def test_capture_projects_no_query_or_key_again(flux_pipe):
    layers = [m for name, m in flux_pipe.transformer.named_modules() if name.endswith(".attn")]
    projections = [getattr(layer, n) for layer in layers for n in ("to_q", "to_k", "add_k_proj") if hasattr(layer, n)]
    counts = []

    def count(**capture):
        calls = []
        handles = [module.register_forward_hook(lambda *args: calls.append(1)) for module in projections]
        try:
            flux_pipe(PROMPTS, generator=generator(), **FLUX_CALL, **capture)
        finally:
            for handle in handles:
                handle.remove()
        counts.append(len(calls))

    count()
    count(objects=OBJECTS)
    assert counts[0] == counts[1] == 2 * len(projections)


def test_processors_restored_and_bad_settings_are_clear_errors(family, joint_pipe):
    call = call_for(family)
    before = joint_pipe.transformer.attn_processors
    joint_pipe(PROMPTS, objects=OBJECTS, generator=generator(), **call)
    assert joint_pipe.transformer.attn_processors == before
    last = 1 if family == "sd3" else 2
    with pytest.raises(ValueError, match=rf"blocks \[7\] do not exist: .* joint-attention blocks 0-{last}"):
        joint_pipe(PROMPTS, objects=OBJECTS, capture_config={"blocks": [0, 7]}, **call)
    with pytest.raises(ValueError, match="layer_scales=\\(2,\\) selects UNet layers by resolution"):
        joint_pipe(PROMPTS, objects=OBJECTS, capture_config={"layer_scales": [2]}, **call)
    with pytest.raises(ValueError, match="normalization must be one of \\('joint', 'text'\\), got 'softmax'"):
        joint_pipe(PROMPTS, objects=OBJECTS, capture_config={"normalization": "softmax"}, **call)
    assert joint_pipe.transformer.attn_processors == before


def test_unet_rejects_transformer_settings(sd_pipe):
    with pytest.raises(ValueError, match="blocks=\\(0,\\) and method='attention' are for diffusion transformers"):
        sd_pipe("a dog", objects=["dog"], capture_config={"blocks": [0]}, num_inference_steps=1, height=64, width=64)


def test_objects_are_found_in_the_prompts_the_image_attends_to(sd3_pipe, flux_pipe):
    # SD3: an object only in T5's prompt is found there (positions after CLIP's 77) ...
    out = sd3_pipe("a dog", prompt_3="a dog and a cat", objects=["cat"], generator=generator(), **SD3_CALL)
    assert out.objects == [["cat"]]
    # ... and one in none of the three prompts names itself
    with pytest.raises(ValueError, match="object 'bird' does not occur in prompt 'a dog'"):
        sd3_pipe("a dog", objects=["bird"], **SD3_CALL)
    # Flux attends to T5 only: an object in the CLIP prompt but not the T5 prompt is missing
    with pytest.raises(ValueError, match="object 'cat' does not occur in prompt 'a dog in the park'"):
        flux_pipe("a cat", prompt_2="a dog in the park", objects=["cat"], **FLUX_CALL)
    with pytest.raises(ValueError, match="object 'bear' of prompt .* lies past the tokenizer's limit of 3 tokens"):
        flux_pipe("a dog and a bear", objects=["bear"], **{**FLUX_CALL, "max_sequence_length": 3})


def test_custom_pipeline_loads_a_stock_folder_offline(family, joint_pipe, tmp_path):
    parent_of(joint_pipe).save_pretrained(tmp_path)
    name = {"sd3": "free_atm_sd3", "flux": "free_atm_flux"}[family]
    pipe = DiffusionPipeline.from_pretrained(
        tmp_path, custom_pipeline=custom_pipeline_path(name), trust_remote_code=True
    )
    expected = {"sd3": "FreeATMStableDiffusion3Pipeline", "flux": "FreeATMFluxPipeline"}[family]
    assert type(pipe).__name__ == expected and pipe.capture_config == CaptureConfig()
    pipe.set_progress_bar_config(disable=True)
    out = pipe(PROMPTS, objects=OBJECTS, generator=generator(), **call_for(family))
    np.testing.assert_array_equal(out.images, joint_pipe(PROMPTS, generator=generator(), **call_for(family)).images)
    assert [m.shape for m in out.masks] == [(2, 32, 32)] * 2


def hub_cache_with(pipe, repo_id: str, cache: Path) -> None:
    """Put ``pipe`` in a Hugging Face cache as the Hub's snapshot of ``repo_id`` (what a download leaves)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    parent_of(pipe).save_pretrained(repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)


def test_generate_accepts_sd3_and_flux_folders_and_hub_ids(family, joint_pipe, tmp_path, monkeypatch):
    """``free-atm generate --model`` on a saved stock folder, and on a Hub id served from the offline cache."""
    from datasets import load_dataset

    from free_atm.cli import main
    from free_atm.models import load_pipeline

    repo_id = f"someone/tiny-{family}"
    hub_cache_with(joint_pipe, repo_id, tmp_path / "cache")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    loaded = load_pipeline(repo_id)
    assert type(loaded) is type(joint_pipe)
    parent_of(joint_pipe).save_pretrained(tmp_path / "model")
    out = tmp_path / "dataset"
    main(["generate", "--model", str(tmp_path / "model"), "--num-images", "2", "--batch-size", "2", "--steps", "1",
          "--height", "32", "--width", "32", "--out", str(out)])  # fmt: skip
    rows = load_dataset(str(out), split="train")
    assert len(rows) == 2 and all(row["image"].size == (32, 32) for row in rows)
    assert all(len(row["masks"]) == len(row["objects"]) > 0 for row in rows)


def guidance_of(family: str) -> dict:
    """Classifier-free guidance: SD3's batched [negative, conditional]; Flux's true CFG (separate calls)."""
    return {} if family == "sd3" else dict(negative_prompt=["a cat", "a bus"], true_cfg_scale=3.0)


@pytest.mark.parametrize("normalization", ["joint", "text"])
def test_kernel_log_sum_exp_path_equals_the_second_pass(family, joint_pipe, normalization, monkeypatch, caplog):
    """The stock processors run on the kernel that returns the log-sum-exp, and never score the image keys
    again; forced onto the second pass, the same call gives the same maps (1e-5) and the same images."""
    import free_atm.attention.joint_processor as joint

    def second_pass(*args, **kwargs):
        raise AssertionError("the kernel path computed the image-key scores")

    call = dict(objects=OBJECTS, capture_config={"normalization": normalization}, **call_for(family))
    call.update(guidance_of(family))
    with monkeypatch.context() as patched, caplog.at_level(logging.DEBUG, logger=joint.__name__):
        patched.setattr(joint, "joint_text_probs", second_pass)
        kernel = joint_pipe(PROMPTS, generator=generator(), **call)
    assert "log-sum-exp from the attention kernel" in caplog.text and "second pass" not in caplog.text
    caplog.clear()
    for processor in (joint.SD3AttentionCaptureProcessor, joint.FluxAttentionCaptureProcessor):
        monkeypatch.setattr(processor, "KERNEL_PROCESSORS", ())
    with caplog.at_level(logging.DEBUG, logger=joint.__name__):
        fallback = joint_pipe(PROMPTS, generator=generator(), **call)
    assert "a processor without a known kernel path, second pass" in caplog.text
    assert "log-sum-exp from the attention kernel" not in caplog.text
    np.testing.assert_array_equal(kernel.images, fallback.images)
    np.testing.assert_array_equal(kernel.images, parent_of(joint_pipe)(PROMPTS, generator=generator(), **{
        k: v for k, v in call.items() if k not in ("objects", "capture_config")
    }).images)  # fmt: skip
    for i in range(len(PROMPTS)):
        torch.testing.assert_close(
            torch.from_numpy(kernel.attention_maps[i]), torch.from_numpy(fallback.attention_maps[i]), atol=1e-5, rtol=0
        )


def test_no_kernel_for_the_call_falls_back_to_the_second_pass(sd3_pipe, monkeypatch, caplog):
    """A known processor whose attention no kernel can serve (here: none returns the log-sum-exp, as for
    a mask or an unsupported device) takes the second pass and gives the reference maps."""
    import free_atm.attention.joint_processor as joint
    import free_atm.attention.lse as lse

    monkeypatch.setattr(lse, "attention_with_lse", lambda *args, **kwargs: None)
    with caplog.at_level(logging.DEBUG, logger=joint.__name__):
        out = sd3_pipe(PROMPTS, objects=OBJECTS, generator=generator(), **SD3_CALL)
    assert "no attention kernel returned the log-sum-exp" in caplog.text
    _, reference = reference_run(sd3_pipe, SD3_CALL)
    expected = normalize(reference.maps(positions("sd3"), GRID, LATENT))
    torch.testing.assert_close(torch.from_numpy(out.attention_maps[1]), expected[1], atol=1e-5, rtol=1e-4)
