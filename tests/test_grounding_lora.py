"""The grounding adapter: its loss against explicit attention, gradients only in the LoRA, and an adapter
saved then loaded into a fresh stock pipeline giving the training pipeline's images, on every family."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor

import free_atm
from free_atm.testing import tiny_flux_components, tiny_sd3_components, tiny_sd_components, tiny_sdxl_components
from free_atm.training.grounding.adapter import (
    adapter_targets,
    add_grounding_adapter,
    attention_layers,
    save_grounding_adapter,
)
from free_atm.training.grounding.loss import grounding_loss, token_columns
from free_atm.training.grounding.pixel_loss import pixel_loss
from free_atm.training.grounding.step import grounding_losses

FAMILIES = {
    "sd": (free_atm.FreeATMDiffusionPipeline, tiny_sd_components),
    "sdxl": (free_atm.FreeATMStableDiffusionXLPipeline, tiny_sdxl_components),
    "sd3": (free_atm.FreeATMStableDiffusion3Pipeline, tiny_sd3_components),
    "flux": (free_atm.FreeATMFluxPipeline, tiny_flux_components),
}
PROMPTS = ["a dog and a cat", "a red circle"]
OBJECTS = [["dog", "cat"], ["red circle"]]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    masks = torch.zeros(2, 2, 32, 32)
    masks[0, 0, :16], masks[0, 1, 16:], masks[1, 0, :, :16] = 1, 1, 1
    return pixels, masks


def test_token_columns_give_each_object_token_its_own_column():
    weights = torch.zeros(2, 6, 2)
    weights[0, 1, 0] = weights[0, 4, 1] = 1.0
    weights[1, 2, 0] = weights[1, 3, 0] = 0.5  # a two-token phrase
    columns, owners = token_columns(weights)
    assert owners.tolist() == [[0, 1], [0, 0]]
    assert columns[0, :, 0].tolist() == [0, 1, 0, 0, 0, 0] and columns[0, :, 1].tolist() == [0, 0, 0, 0, 1, 0]
    assert columns[1, :, 0].tolist() == [0, 0, 1, 0, 0, 0] and columns[1, :, 1].tolist() == [0, 0, 0, 1, 0, 0]


def test_the_loss_is_the_mean_squared_shortfall_of_each_tokens_share_inside_its_object():
    maps = torch.rand(2, 3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(2, 2, 8, 8)
    masks[0, 0, :4], masks[0, 1, :, 4:], masks[1, 0, 2:6, 2:6] = 1, 1, 1  # image 1's second object is empty
    owners = torch.tensor([[0, 1, 1], [0, 1, -1]])
    expected, counted = 0.0, 0
    for b in range(2):
        for t in range(3):
            owner = int(owners[b, t])
            area = F.avg_pool2d(masks[b, owner][None, None], 2)[0, 0] if owner >= 0 else None
            if owner < 0 or area.sum() == 0:
                continue
            for layer in range(2):
                share = (maps[b, t, layer] * area).sum() / maps[b, t, layer].sum()
                expected, counted = expected + (1 - share) ** 2, counted + 1
    torch.testing.assert_close(grounding_loss(maps, masks, owners), expected / counted)
    assert grounding_loss(maps, torch.zeros_like(masks), owners) == 0  # no object drawn: nothing counts


def test_the_pixel_loss_is_the_cross_entropy_of_each_objects_normalised_map_against_its_mask():
    maps = torch.rand(2, 3, 2, 4, 4, generator=torch.Generator().manual_seed(0)).double()
    masks = torch.zeros(2, 2, 8, 8)
    masks[0, 0, :4], masks[0, 1, :, 4:], masks[1, 0, 2:6, 2:6] = 1, 1, 1  # image 1's second object is empty
    owners = torch.tensor([[0, 1, 1], [0, 1, -1]])  # image 0's second object has two tokens
    expected, counted = 0.0, 0
    for b in range(2):
        for m in range(2):
            tokens = [t for t in range(3) if owners[b, t] == m]
            target = F.avg_pool2d(masks[b, m][None, None].double(), 2)[0, 0]  # area-resized: fractions at edges
            if not tokens or target.sum() == 0:
                continue
            summed = sum(maps[b, t].mean(0) for t in tokens)
            shaped = ((summed - summed.min()) / (summed.max() - summed.min())).clamp(1e-4, 1 - 1e-4)
            cross = -(target * shaped.log() + (1 - target) * (1 - shaped).log())
            expected, counted = expected + cross.mean(), counted + 1
    torch.testing.assert_close(pixel_loss(maps, masks, owners).double(), expected / counted, rtol=1e-5, atol=1e-6)
    assert pixel_loss(maps, torch.zeros_like(masks), owners) == 0  # no object drawn: nothing counts
    shaped_like_its_mask = F.avg_pool2d(masks, 2)[:, [0, 1, 1]][:, :, None].expand(-1, -1, 2, -1, -1)
    assert pixel_loss(shaped_like_its_mask * 7.0, masks, owners) < 1e-3  # any scale of the mask's shape


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_the_steps_grounding_loss_equals_explicit_attention(family, monkeypatch):
    """UNets: the capture's maps with gradients against each cross-attention layer's explicit softmax (the
    stock ``AttnProcessor``), recorded on the same forward pass, then per token, resized and scored."""
    cls, components = FAMILIES[family]
    pipe = cls(**components())
    pixels, masks = _batch()
    recorded = []
    attention_class = type(next(m for m in pipe.unet.modules() if type(m).__name__ == "Attention"))
    get_scores = attention_class.get_attention_scores

    def recording(attn, query, key, attention_mask=None):
        probs = get_scores(attn, query, key, attention_mask)
        if attn.is_cross_attention:
            recorded.append(probs)
        return probs

    pipe.unet.set_attn_processor(AttnProcessor())
    monkeypatch.setattr(attention_class, "get_attention_scores", recording)
    out = grounding_losses(pipe, pixels, PROMPTS, OBJECTS, masks, torch.tensor([100.0, 700.0]), torch.Generator())
    columns, owners = token_columns(pipe._object_weights({}, PROMPTS, OBJECTS, False)[0])
    size = tuple(out.maps.shape[-2:])
    layers = []
    for probs in recorded:  # (B * heads, N, L), in forward order
        maps = probs.view(2, -1, *probs.shape[1:]).double().mean(1) @ columns.double()  # (B, N, T)
        side = math.isqrt(maps.shape[1])  # square images: square layer grids
        maps = maps.transpose(1, 2).reshape(2, -1, side, side)
        layers.append(F.interpolate(maps, size=size, mode="bilinear", align_corners=False))
    reference = grounding_loss(torch.stack(layers, 2), masks, owners)
    assert len(recorded) == out.maps.shape[2]
    torch.testing.assert_close(out.maps.double(), torch.stack(layers, 2), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.grounding.double(), reference.double(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_steps_grounding_losses_equal_the_explicit_joint_softmax(family):
    """SD3 and Flux: the capture's maps with gradients against each joint block's full softmax over text
    and image keys in float64 (``JointReference``), on the same latents, noise and levels."""
    from joint_reference import JointReference

    cls, components = FAMILIES[family]
    pipe = cls(**components())
    pixels, masks = _batch()
    timesteps = torch.tensor([100.0, 700.0])
    out = grounding_losses(pipe, pixels, PROMPTS, OBJECTS, masks, timesteps, torch.Generator().manual_seed(3))
    columns, owners = token_columns(pipe._object_weights({}, PROMPTS, OBJECTS, False)[0])
    with torch.no_grad():
        latents = pipe._annotation_latents(pixels)
        conditioning = pipe._annotation_conditioning(PROMPTS, *pixels.shape[-2:], {})
        noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(3))
        reference = JointReference(pipe.transformer, num_images=2)
        try:
            pipe.denoise(latents, noise, timesteps, conditioning)
        finally:
            reference.restore()
    size = tuple(out.maps.shape[-2:])
    layers = []
    for record in reference.records:  # each block's image-to-text probabilities (B, heads, N, L), in order
        maps = record["probs"].double().mean(1) @ columns.double()  # (B, N, T)
        side = math.isqrt(maps.shape[1])
        maps = maps.transpose(1, 2).reshape(2, -1, side, side)
        layers.append(F.interpolate(maps, size=size, mode="bilinear", align_corners=False))
    expected = torch.stack(layers, 2)
    assert out.maps.shape == expected.shape and out.maps.requires_grad
    torch.testing.assert_close(out.maps.double(), expected, rtol=1e-4, atol=1e-6)
    for got, loss in ((out.grounding, grounding_loss), (out.pixel, pixel_loss)):
        torch.testing.assert_close(got.double(), loss(expected, masks, owners).double(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_adapter_trains_alone_and_loads_into_a_stock_pipeline(family, tmp_path):
    cls, components = FAMILIES[family]
    pipe = cls(**components())
    total = sum(p.numel() for p in pipe.denoiser.parameters())
    trainable = add_grounding_adapter(pipe, rank=4, alpha=4)
    assert 0 < trainable <= 0.05 * total
    base = {k: v.clone() for k, v in pipe.denoiser.state_dict().items() if "lora" not in k}
    lora = {k: v.clone() for k, v in pipe.denoiser.state_dict().items() if "lora" in k}
    optimizer = torch.optim.AdamW([p for p in pipe.denoiser.parameters() if p.requires_grad], lr=1e-2)
    pixels, masks = _batch()
    for step in range(2):
        out = grounding_losses(pipe, pixels, PROMPTS, OBJECTS, masks, torch.tensor([100.0, 700.0]),
                               torch.Generator().manual_seed(step))  # fmt: skip
        assert out.maps.requires_grad and torch.isfinite(out.grounding)
        (out.denoising + out.grounding).backward()
        optimizer.step()
        optimizer.zero_grad()
    after = pipe.denoiser.state_dict()
    assert all(torch.equal(after[k], v) for k, v in base.items())  # the base weights did not move
    assert any(not torch.equal(after[k], v) for k, v in lora.items())  # the adapter did
    save_grounding_adapter(pipe, tmp_path)
    stock = cls(**components())
    stock.load_lora_weights(tmp_path)
    call = dict(objects=["dog"], num_inference_steps=2, height=32, width=32, output_type="np")
    trained = pipe("a dog", generator=torch.Generator().manual_seed(0), **call)
    loaded = stock("a dog", generator=torch.Generator().manual_seed(0), **call)
    np.testing.assert_array_equal(loaded.images, trained.images)
    np.testing.assert_array_equal(loaded.attention_maps[0], trained.attention_maps[0])


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_a_folders_attention_blocks_are_read_from_its_configs_without_its_weights(family, tmp_path):
    from free_atm.models import denoiser_skeleton

    cls, components = FAMILIES[family]
    pipe = cls(**components())
    pipe.save_pretrained(tmp_path / "model")
    skeleton = denoiser_skeleton(str(tmp_path / "model"))
    assert type(skeleton) is type(pipe.denoiser) and {p.device.type for p in skeleton.parameters()} == {"meta"}
    assert attention_layers(skeleton) == attention_layers(pipe.denoiser)
    assert adapter_targets(skeleton, [0]) == adapter_targets(pipe.denoiser, [0])


def test_bad_adapter_settings_are_named():
    pipe = free_atm.FreeATMStableDiffusion3Pipeline(**tiny_sd3_components())
    assert adapter_targets(pipe.denoiser, [1])[0] == "transformer_blocks.1.attn.to_q"
    with pytest.raises(ValueError, match=r"--blocks \[0, 7\]: the capture reads this model's attention blocks 0 to 1"):
        adapter_targets(pipe.denoiser, [0, 7])
    with pytest.raises(ValueError, match="--rank must be at least 1, got 0"):
        add_grounding_adapter(pipe, rank=0, alpha=1)


TRAINING = [
    *("--pretrained_model_name_or_path", "tiny-random", "--dataset_name", "shapes:8", "--image_size", "32"),
    *("--rank", "2", "--per_device_train_batch_size", "2", "--use_cpu", "--report_to", "none"),
    *("--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1"),
]


def test_the_training_script_resumes_and_saves_what_a_stock_pipeline_loads(tmp_path):
    """Killed right after its step-2 checkpoint and run again, the script ends with the adapter of the
    uninterrupted run; the folder holds that adapter (diffusers' LoRA format) and its card, and a stock
    ``StableDiffusionPipeline`` loads it to the images of the training pipeline with it."""
    from diffusers import StableDiffusionPipeline
    from training_runs import assert_killed_run_resumes_to_the_uninterrupted_result

    from free_atm.testing import tiny_sd_components

    script = Path(__file__).resolve().parents[1] / "trainers" / "train_grounding_lora.py"
    weights = assert_killed_run_resumes_to_the_uninterrupted_result(
        script, [*TRAINING, "--max_steps", "4", "--validation_images", "2"], tmp_path, steps=4, kill_at=2,
        weights_file="pytorch_lora_weights.safetensors",
    )  # fmt: skip
    assert weights["whole"] and all(".lora" in key for key in weights["whole"])
    card = (tmp_path / "whole" / "README.md").read_text()
    assert "library_name: diffusers" in card and "pipe.load_lora_weights" in card and "shapes:8" in card
    # the card's "before": the stock model's annotate masks on the 2 held-out rows, IoU counted here
    from datasets import Image as ImageFeature

    from free_atm.models import load_pipeline
    from free_atm.training.grounding.recipe import COLUMNS, GroundingArguments, GroundingCollator

    rows = GroundingArguments(dataset_name="shapes:8", image_size=32).training_data(COLUMNS)
    rows = rows.cast_column("image", ImageFeature()).select([6, 7])
    batch = GroundingCollator(32)(list(rows))
    generators = [torch.Generator().manual_seed(42 + i) for i in range(2)]  # the run's seed, one per image
    out = load_pipeline("tiny-random").annotate((batch["pixel_values"] + 1) / 2, batch["prompts"], batch["objects"],
                                                generator=generators)  # fmt: skip
    ious = [
        (masks[m] & truth[m]).sum() / (masks[m] | truth[m]).sum()
        for masks, truth, objects in zip(out.masks, batch["masks"].numpy() > 0.5, batch["objects"])
        for m in range(len(objects))
    ]
    assert f"| held-out annotate mean IoU (2 images), base model | {round(float(np.mean(ious)), 4)} |" in card, card
    assert "held-out annotate mean IoU (2 images), with the adapter |" in card
    call = dict(num_inference_steps=2, height=32, width=32, output_type="np")
    stock = StableDiffusionPipeline(**tiny_sd_components())
    stock.load_lora_weights(tmp_path / "whole")
    ours = free_atm.FreeATMDiffusionPipeline(**tiny_sd_components())
    ours.load_lora_weights(tmp_path / "whole")
    plain = free_atm.FreeATMDiffusionPipeline(**tiny_sd_components())
    images = [
        p("a red circle", generator=torch.Generator().manual_seed(0), **call).images for p in (stock, ours, plain)
    ]
    np.testing.assert_array_equal(images[0], images[1])
    assert not np.array_equal(images[1], images[2])  # the adapter changes the images


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--rank", "0"], "--rank must be at least 1, got 0"),
        (["--min_timestep", "900", "--max_timestep", "100"], "--min_timestep 900 and --max_timestep 100 must satisfy"),
        (["--image_size", "40"], "--image_size must be a multiple of 16 (every family's latent grid), got 40"),
        (["--grounding_weight", "inf"], "--grounding_weight must be a finite number, 0 or more, got inf"),
        (["--pixel_weight", "-1"], "--pixel_weight must be a finite number, 0 or more, got -1.0"),
        (["--blocks", "0", "9"], "--blocks [0, 9]: the capture reads this model's attention blocks 0 to 6"),
        (["--validation_images", "8"], "--validation_images 8 leaves nothing to train on: the data has 8 rows"),
        (["--dataset_name", "{tmp}/plain"], "lacks the free-atm columns ['prompt', 'objects', 'masks']"),
    ],
)
def test_bad_training_settings_are_one_line_before_the_model_loads(arguments, message, tmp_path, capsys, monkeypatch):
    import runpy
    import sys

    from datasets import Dataset
    from PIL import Image

    Dataset.from_dict({"image": [Image.new("RGB", (8, 8))]}).to_parquet(str(tmp_path / "plain" / "data" / "t.parquet"))
    monkeypatch.setattr("free_atm.models.load_pipeline", lambda *a, **k: pytest.fail("the model loaded"))
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in [*TRAINING, *arguments]]
    monkeypatch.setattr(sys, "argv", ["train_grounding_lora.py", *arguments, "--output_dir", str(tmp_path / "run")])
    capsys.readouterr()
    script = Path(__file__).resolve().parents[1] / "trainers" / "train_grounding_lora.py"
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(script), run_name="__main__")
    error = capsys.readouterr().err
    assert stop.value.code == 2 and message in error and "Traceback" not in error, error
    assert not (tmp_path / "run").exists()


def test_generate_loads_an_adapter_at_its_scale_and_records_it(tmp_path, capsys):
    from datasets import load_dataset

    from free_atm.cli import main
    from free_atm.models import load_pipeline

    pipe = load_pipeline("tiny-random")
    add_grounding_adapter(pipe, rank=2, alpha=2)
    for name, parameter in pipe.denoiser.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)  # an adapter that changes the images
    save_grounding_adapter(pipe, tmp_path / "adapter")

    def generated(name: str, *extra: str) -> list[bytes]:
        main(
            [
                "generate",
                "--model",
                "tiny-random",
                "--num-images",
                "2",
                "--steps",
                "2",
                "--out",
                str(tmp_path / name),
                *extra,
            ]
        )
        return [np.asarray(row["image"]).tobytes() for row in load_dataset(str(tmp_path / name), split="train")]

    plain = generated("plain")
    adapted = generated("adapted", "--lora", str(tmp_path / "adapter"), "--lora-scale", "0.5")
    off = generated("off", "--lora", str(tmp_path / "adapter"), "--lora-scale", "0")
    assert adapted != plain and off == plain
    recorded = json.loads((tmp_path / "adapted" / "generation_config.json").read_text())
    assert recorded["lora"] == str(tmp_path / "adapter") and recorded["lora_scale"] == 0.5
    assert (
        f"with the LoRA adapter `{tmp_path / 'adapter'}` at weight 0.5"
        in (tmp_path / "adapted" / "README.md").read_text()
    )
    for arguments, message in [
        (["--lora", str(tmp_path / "plain")], "holds no pytorch_lora_weights.safetensors (a diffusers LoRA adapter)"),
        (["--lora", str(tmp_path / "adapter"), "--lora-scale", "9"], "--lora-scale must be in [0, 4], got 9.0"),
    ]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            main(["generate", "--model", "tiny-random", "--out", str(tmp_path / "bad"), *arguments])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
