"""Maps per layer and per step on request (``CaptureConfig(keep=...)``), on every family and in ``annotate``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from free_atm import CaptureConfig
from free_atm.masks import normalize_maps
from free_atm.visualize import plot_layer_step_maps

PROMPTS = ["a photo of a dog and a cat", "a red circle and a blue square"]
OBJECTS = [["dog", "cat"], ["circle", "square"]]
CALLS = {
    "sd": dict(num_inference_steps=3),
    "sdxl": dict(num_inference_steps=3),
    "sd3": dict(height=32, width=32, num_inference_steps=3, max_sequence_length=32),
    "flux": dict(height=32, width=32, num_inference_steps=3, max_sequence_length=24),
}


def _draw(pipe, family, capture_config=None):
    height, width = CALLS[family].get("height"), CALLS[family].get("width")
    size = (height, width) if height else pipe.default_image_size
    latents = pipe.initial_latents([5, 6], *size)
    call = dict(CALLS[family], objects=OBJECTS, latents=latents, output_type="np", capture_config=capture_config)
    return pipe(PROMPTS, **call)


@pytest.mark.parametrize("family", list(CALLS))
def test_kept_maps_average_to_the_default_map_and_leave_the_images_alone(family, request):
    pipe = request.getfixturevalue(f"{family}_pipe")
    plain = _draw(pipe, family)
    kept = _draw(pipe, family, {"keep": "layers_and_steps"})
    np.testing.assert_array_equal(kept.images, plain.images)
    assert plain.kept_maps is None
    for i, maps in enumerate(kept.kept_maps):
        steps, layers = maps.layers_and_steps.shape[1:3]
        assert maps.layers_and_steps.shape[0] == len(OBJECTS[i]) and steps == 3 and layers >= 2
        assert len(maps.timesteps) == steps and maps.timesteps == sorted(maps.timesteps, reverse=True)
        # per layer: the mean over steps; per step: the mean over layers; all of them: the default map
        np.testing.assert_allclose(maps.layers, maps.layers_and_steps.mean(1), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(maps.steps, maps.layers_and_steps.mean(2), rtol=1e-5, atol=1e-7)
        average = normalize_maps(torch.from_numpy(maps.layers.mean(1).astype(np.float64))).numpy()
        np.testing.assert_allclose(average, plain.attention_maps[i], atol=1e-5)


def test_each_keep_returns_what_it_names(sd_pipe):
    both = _draw(sd_pipe, "sd", {"keep": "layers_and_steps"}).kept_maps[0]
    layers = _draw(sd_pipe, "sd", {"keep": "layers"}).kept_maps[0]
    steps = _draw(sd_pipe, "sd", {"keep": "steps"}).kept_maps[0]
    assert layers.steps is None and layers.layers_and_steps is None
    assert steps.layers is None and steps.layers_and_steps is None
    np.testing.assert_allclose(layers.layers, both.layers, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(steps.steps, both.steps, rtol=1e-5, atol=1e-8)
    # a layer window keeps only its layers; a timestep window only its steps
    window = _draw(sd_pipe, "sd", {"keep": "layers_and_steps", "timestep_range": (0, 500)}).kept_maps[0]
    assert window.timesteps == [t for t in both.timesteps if t <= 500]
    np.testing.assert_allclose(window.layers_and_steps, both.layers_and_steps[:, -len(window.timesteps) :], atol=1e-7)


def test_maps_kept_whole_average_to_any_layer_and_step_setting(sd_pipe, sd3_pipe):
    """Averaging kept maps afterwards over the layers of one scale and the steps of a window gives the map
    captured with those settings."""
    kept = _draw(sd_pipe, "sd", {"keep": "layers_and_steps"}).kept_maps
    scales = kept[0].layer_scales
    assert len(scales) == kept[0].layers.shape[1] and len(set(scales)) > 1
    assert _draw(sd3_pipe, "sd3", {"keep": "layers"}).kept_maps[0].layer_scales is None  # blocks, not scales
    settings = [{"layer_scales": (max(scales),)}, {"timestep_range": (0, 500)}]
    settings.append({**settings[0], **settings[1]})
    for setting in settings:
        captured = _draw(sd_pipe, "sd", setting).attention_maps
        for i, maps in enumerate(kept):
            layer = np.asarray(scales) == max(scales) if "layer_scales" in setting else slice(None)
            step = [t <= 500 for t in maps.timesteps] if "timestep_range" in setting else slice(None)
            chosen = maps.layers_and_steps[:, step][:, :, layer]
            np.testing.assert_allclose(maps.average(**setting), chosen.mean((1, 2)), rtol=1e-6)
            average = normalize_maps(torch.from_numpy(maps.average(**setting).astype(np.float64))).numpy()
            np.testing.assert_allclose(average, captured[i], atol=1e-5)
    steps_only = _draw(sd_pipe, "sd", {"keep": "steps"}).kept_maps[0]
    assert steps_only.layer_scales is None
    np.testing.assert_allclose(steps_only.average(timestep_range=(0, 500)), kept[0].average(timestep_range=(0, 500)))
    with pytest.raises(ValueError, match=r"layer_scales=\(1,\) and timestep_range=None needs maps kept per layer"):
        steps_only.average(layer_scales=(1,))
    with pytest.raises(ValueError, match=r"no kept layer or step matches layer_scales=\(64,\)"):
        kept[0].average(layer_scales=(64,))


def test_annotate_keeps_maps_per_noise_level_for_each_image_at_its_own_size(sd_pipe):
    images = [Image.new("RGB", (64, 64), "gray"), Image.new("RGB", (32, 64), "white")]
    out = sd_pipe.annotate(images, PROMPTS, OBJECTS, timesteps=(100, 300), capture_config={"keep": "steps"})
    assert [m.timesteps for m in out.kept_maps] == [[100.0, 300.0], [100.0, 300.0]]
    scale = sd_pipe.vae_scale_factor
    assert out.kept_maps[0].steps.shape[:2] == (2, 2) and out.kept_maps[1].steps.shape[-2:] == (
        64 // scale,
        32 // scale,
    )


def test_the_plot_draws_a_row_per_step_and_refuses_other_shapes(tmp_path):
    maps = np.random.default_rng(0).random((3, 4, 8, 8))
    plot_layer_step_maps(maps, str(tmp_path / "grid.png"), timesteps=[900, 500, 100], title="dog")
    assert Image.open(tmp_path / "grid.png").size[0] > Image.open(tmp_path / "grid.png").size[1]
    with pytest.raises(ValueError, match="got 2 timesteps for 3 rows"):
        plot_layer_step_maps(maps, str(tmp_path / "x.png"), timesteps=[1, 2])
    with pytest.raises(ValueError, match=r"maps must be \(S, L, h, w\) or \(L, h, w\)"):
        plot_layer_step_maps(maps[0, 0, 0], str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="keep must be one of"):
        CaptureConfig(keep="blocks")
