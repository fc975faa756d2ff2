"""``annotate`` on every family: the maps of one noised pass equal those the stock pipeline's own first step
captures from the same denoiser input, and a batch of two sizes keeps each image at its own size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

PROMPTS = ["a photo of a dog and a cat", "a red circle and a blue square"]
OBJECTS = [["dog", "cat"], ["circle", "square"]]
FAMILIES = ("sd", "sdxl", "sd3", "flux")


def _images(size=(32, 32)) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in PROMPTS]


@pytest.mark.parametrize("family", FAMILIES)
def test_annotate_reads_what_the_pipelines_first_step_reads(family, request):
    pipe = request.getfixturevalue(f"{family}_pipe")
    images = _images()
    pixels = pipe.image_processor.preprocess(images)
    clean = pipe._annotation_latents(pixels)
    noise = randn_tensor(clean.shape, generator=torch.Generator().manual_seed(3), dtype=clean.dtype)
    call = dict(objects=OBJECTS, num_inference_steps=1, height=32, width=32, output_type="np")
    if family in ("sd3", "flux"):
        # the flow's first step is sigma 1: the denoiser reads the noise alone, as annotate does at t = 1000
        # (both at the pipeline's default text length, which annotate uses)
        timestep, latents = 1000, noise
        call |= {"guidance_scale": 1.0} if family == "sd3" else {"guidance_scale": pipe.annotation_guidance}
    else:
        # one DDIM step of the leading spacing runs at t = 1, on the latents it is given
        timestep = int(pipe.scheduler.set_timesteps(1) or pipe.scheduler.timesteps[0])
        latents = pipe.scheduler.add_noise(clean, noise, torch.tensor([timestep]))
        call |= {"guidance_scale": 1.0}
    stock = pipe(PROMPTS, latents=latents, **call)
    annotated = pipe.annotate(
        images, PROMPTS, OBJECTS, timesteps=(timestep,), generator=torch.Generator().manual_seed(3)
    )
    for i in range(len(PROMPTS)):
        np.testing.assert_allclose(annotated.attention_maps[i], stock.attention_maps[i], atol=1e-5)
        assert annotated.masks[i].shape == (2, 32, 32)


@pytest.mark.parametrize("family", FAMILIES)
def test_annotate_keeps_each_image_at_its_own_size_in_any_mode(family, request):
    pipe = request.getfixturevalue(f"{family}_pipe")
    images = [_images((32, 32))[0], _images((64, 32))[1].convert("L")]  # grayscale converts to RGB
    out = pipe.annotate(images, PROMPTS, OBJECTS, generator=torch.Generator().manual_seed(0))
    assert [m.shape for m in out.masks] == [(2, 32, 32), (2, 32, 64)]
    assert [b.shape for b in out.boxes] == [(2, 4), (2, 4)]
    alone = pipe.annotate(images[:1], PROMPTS[:1], OBJECTS[:1], generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(alone.attention_maps[0], out.attention_maps[0])


def test_annotate_refuses_levels_outside_the_schedule_and_mismatched_lists(sd3_pipe):
    with pytest.raises(ValueError, match=r"timesteps in \[0, 1000\] .* got \(1500,\)"):
        sd3_pipe.annotate(_images(), PROMPTS, OBJECTS, timesteps=(1500,))
    with pytest.raises(ValueError, match="got 2 images, 1 prompts and 2 object lists"):
        sd3_pipe.annotate(_images(), PROMPTS[:1], OBJECTS)
    assert sd3_pipe.annotation_timesteps == (500,)


def test_annotate_takes_any_pil_mode_and_numpy_arrays_as_the_same_rgb_image(sd_pipe):
    """RGBA, palette and grayscale images and numpy arrays (uint8, floats in [0, 1], one channel) are the
    RGB image they show: the same maps as that RGB image."""
    rgb = _images()[0]
    palette, gray = rgb.convert("P"), rgb.convert("L")
    pixels = np.asarray(rgb)
    pairs = [
        (rgb.convert("RGBA"), rgb),
        (pixels, rgb),
        (pixels / 255.0, rgb),
        (palette, palette.convert("RGB")),
        (np.asarray(gray), gray.convert("RGB")),
    ]
    for given, shown in pairs:
        out, expected = (
            sd_pipe.annotate(image, PROMPTS[0], OBJECTS[0], generator=torch.Generator().manual_seed(0))
            for image in (given, shown)
        )
        np.testing.assert_allclose(out.attention_maps[0], expected.attention_maps[0], atol=1e-6)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (Image.new("RGB", (1, 1)), "image 0 is 1 x 1 pixels; annotate takes sides of \\d+ to 4096 pixels"),
        (Image.new("L", (5000, 16)), "image 0 is 5000 x 16 pixels; annotate takes sides of \\d+ to 4096 pixels"),
        (np.zeros((32, 32, 2), np.uint8), "image 0 is an array of shape \\(32, 32, 2\\); expected"),
        (np.full((32, 32), np.nan), "image 0 is an array of float64; expected uint8, or finite floats"),
        ("photo.png", "image 0 is a str; annotate takes PIL images or numpy arrays"),
    ],
)
def test_annotate_names_an_image_it_cannot_take_before_any_model_runs(sd_pipe, image, message, monkeypatch):
    monkeypatch.setattr(sd_pipe, "_annotation_latents", lambda *a: pytest.fail("the VAE ran"))
    with pytest.raises(ValueError, match=message):
        sd_pipe.annotate([image], PROMPTS[:1], OBJECTS[:1])
