"""Pixel-adaptive refinement against a loop written out pixel by pixel, and where the pipelines use it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import generator
from PIL import Image

from free_atm import CaptureConfig
from free_atm.masks import maps_to_masks
from free_atm.pixel_refinement import DILATIONS, TEMPERATURE, refine_with_pixels

PROMPT, OBJECTS = "a red circle and a blue square", ["red circle", "blue square"]
CALL = dict(num_inference_steps=2, height=64, width=64)


def explicit_refinement(maps: np.ndarray, image: np.ndarray, iterations: int) -> np.ndarray:
    """PAMR written out: per pixel, its 8 neighbours per dilation (border pixels repeated), weights
    ``softmax(-mean_c |I_c(i) - I_c(j)| / (TEMPERATURE * std_c))`` with ``std_c`` the sample standard
    deviation of channel ``c`` over the neighbours, and ``iterations`` weighted means."""
    height, width = image.shape[1:]
    offsets = [(dy, dx) for d in DILATIONS for dy in (-d, 0, d) for dx in (-d, 0, d) if dy or dx]

    def at(y: int, x: int) -> tuple[int, int]:
        return min(max(y, 0), height - 1), min(max(x, 0), width - 1)

    weights = np.zeros((height, width, len(offsets)))
    for y in range(height):
        for x in range(width):
            around = np.array([image[:, at(y + dy, x + dx)[0], at(y + dy, x + dx)[1]] for dy, dx in offsets])
            spread = around.std(axis=0, ddof=1)
            scores = -(np.abs(around - image[:, y, x]) / (TEMPERATURE * spread + 1e-8)).mean(axis=1)
            weights[y, x] = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    for _ in range(iterations):
        new = np.zeros_like(maps)
        for y in range(height):
            for x in range(width):
                for k, (dy, dx) in enumerate(offsets):
                    new[:, y, x] += weights[y, x, k] * maps[:, at(y + dy, x + dx)[0], at(y + dy, x + dx)[1]]
        maps = new
    return maps


def test_refinement_is_the_pixel_by_pixel_weighted_mean():
    rng = np.random.default_rng(0)
    image, maps = rng.random((3, 9, 11)), rng.random((2, 9, 11))
    refined = refine_with_pixels(torch.from_numpy(maps).float(), torch.from_numpy(image).float(), 3)
    np.testing.assert_allclose(refined.numpy(), explicit_refinement(maps, image, 3), rtol=1e-4, atol=1e-5)


def square_scene() -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """A 32 x 32 grey image with a red 11 x 11 square, its exact mask, and a coarse 4 x 4 map of it."""
    image = torch.full((3, 32, 32), 0.5)
    truth = np.zeros((32, 32), bool)
    truth[9:20, 13:24] = True
    image[:, torch.from_numpy(truth)] = torch.tensor([0.9, 0.1, 0.1])[:, None]
    coarse = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(truth).float()[None], 4)
    return image, truth, coarse


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    return (mask & truth).sum() / (mask | truth).sum()


def test_a_coarse_map_follows_the_objects_edge_after_refinement():
    image, truth, coarse = square_scene()
    _, raw, _ = maps_to_masks(coarse, (32, 32), "fixed", 0.5)
    _, refined, boxes = maps_to_masks(coarse, (32, 32), "fixed", 0.5, image=image, pixel_refinement=10)
    assert iou(raw[0], truth) < 0.75
    assert iou(refined[0], truth) == 1.0
    np.testing.assert_array_equal(boxes[0], [13, 9, 24, 20])


def test_a_uniform_image_leaves_a_constant_map_constant():
    constant = torch.full((1, 12, 12), 0.25)
    torch.testing.assert_close(refine_with_pixels(constant, torch.rand(3, 12, 12), 4), constant)


@pytest.mark.parametrize("value", [-1, 1.5, True, 101, 10**9])
def test_bad_pixel_refinement_is_a_value_error_naming_it(value):
    with pytest.raises(ValueError) as error:
        CaptureConfig(pixel_refinement=value)
    assert str(error.value) == f"pixel_refinement must be an int in [0, 100], got {value!r}"


def test_maps_and_image_must_belong_together():
    with pytest.raises(ValueError, match=r"pixel_refinement=3 needs the image the maps belong to"):
        maps_to_masks(torch.rand(1, 4, 4), (16, 16), pixel_refinement=3)
    with pytest.raises(ValueError, match=r"maps of size \(16, 16\) for an image of size \(8, 8\)"):
        refine_with_pixels(torch.rand(1, 16, 16), torch.rand(3, 8, 8), 1)


@pytest.mark.parametrize("output_type", ["np", "pt", "pil"])
def test_the_pipeline_refines_masks_along_its_own_images(sd_pipe, output_type):
    config = CaptureConfig(pixel_refinement=4, threshold=0.5)
    out = sd_pipe(
        PROMPT, objects=OBJECTS, capture_config=config, generator=generator(), output_type=output_type, **CALL
    )
    if output_type == "pil":
        pixels = torch.from_numpy(np.asarray(out.images[0], dtype=np.float32) / 255).permute(2, 0, 1)
    elif output_type == "pt":
        pixels = out.images[0].float()
    else:
        pixels = torch.from_numpy(out.images[0]).permute(2, 0, 1)
    soft = torch.from_numpy(out.attention_maps[0])
    _, expected, _ = maps_to_masks(soft, (64, 64), "fixed", 0.5, image=pixels, pixel_refinement=4)
    _, unrefined, _ = maps_to_masks(soft, (64, 64), "fixed", 0.5)
    np.testing.assert_array_equal(out.masks[0], expected)
    assert (out.masks[0] != unrefined).any()


@pytest.mark.parametrize("family", ["sdxl_pipe", "sd3_pipe", "flux_pipe"])
def test_every_family_refines_along_its_images(request, family):
    pipe = request.getfixturevalue(family)
    config = {"pixel_refinement": 3}
    out = pipe(PROMPT, objects=OBJECTS, capture_config=config, generator=generator(), output_type="np", **CALL)
    pixels = torch.from_numpy(out.images[0]).permute(2, 0, 1)
    soft = torch.from_numpy(out.attention_maps[0])
    _, expected, _ = maps_to_masks(soft, out.images[0].shape[:2], image=pixels, pixel_refinement=3)
    np.testing.assert_array_equal(out.masks[0], expected)


def test_latent_output_has_no_pixels_to_follow(sd_pipe):
    with pytest.raises(ValueError, match=r"pixel_refinement=2 follows the decoded image.*output_type='latent'"):
        sd_pipe(PROMPT, objects=OBJECTS, capture_config={"pixel_refinement": 2}, output_type="latent", **CALL)


def test_annotate_refines_along_the_annotated_image(sd_pipe):
    image, _, _ = square_scene()
    picture = Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).resize((64, 64))
    raw = sd_pipe.annotate([picture], [PROMPT], [OBJECTS], timesteps=(100,), generator=generator())
    refined = sd_pipe.annotate(
        [picture], [PROMPT], [OBJECTS], timesteps=(100,), generator=generator(), capture_config={"pixel_refinement": 4}
    )
    np.testing.assert_array_equal(refined.attention_maps[0], raw.attention_maps[0])
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255).permute(2, 0, 1)
    _, expected, _ = maps_to_masks(torch.from_numpy(raw.attention_maps[0]), (64, 64), image=pixels, pixel_refinement=4)
    np.testing.assert_array_equal(refined.masks[0], expected)
    assert (refined.masks[0] != raw.masks[0]).any()
