"""Sampling settings saved with a model: the round trip, what a call and a command take from them, what
overrides them, and the values refused."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from free_atm.cli import main
from free_atm.diffusion import FreeATMDiffusionPipeline, FreeATMStableDiffusion3Pipeline
from free_atm.diffusion.sampling import SamplingConfig
from free_atm.models import load_pipeline
from free_atm.models.registry import saved_sampling
from free_atm.testing import tiny_sd3_components, tiny_sd_components

PROMPT = "a photo of a dog and a cat"
SAVED = {"guidance_scale": 9.0, "num_inference_steps": 3, "scheduler": "euler", "timestep_spacing": "trailing"}


@pytest.fixture
def saved_folder(tmp_path):
    pipe = FreeATMDiffusionPipeline(**tiny_sd_components(), sampling_config=SAVED)
    pipe.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def _draw(pipe, **kwargs) -> np.ndarray:
    latents = pipe.initial_latents([7], *pipe.default_image_size)
    return pipe(PROMPT, objects=["dog"], latents=latents, output_type="np", **kwargs).images[0]


def test_sampling_settings_round_trip_through_a_saved_folder(saved_folder):
    index = json.loads((saved_folder / "model_index.json").read_text())
    assert index["sampling_config"] == {**SamplingConfig().to_dict(), **SAVED}
    assert index["scheduler"] == ["diffusers", "EulerDiscreteScheduler"]
    pipe = load_pipeline(str(saved_folder))
    assert pipe.sampling_config == SamplingConfig(**SAVED) == saved_sampling(str(saved_folder))
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler) and pipe.scheduler.config.timestep_spacing == "trailing"
    # the rebuilt scheduler keeps the saved one's betas and prediction type
    base = tiny_sd_components()["scheduler"]
    assert pipe.scheduler.config.beta_end == base.config.beta_end
    assert pipe.scheduler.config.prediction_type == base.config.prediction_type


def test_a_call_samples_with_the_saved_settings_unless_it_gives_them(saved_folder):
    pipe = load_pipeline(str(saved_folder))
    plain = FreeATMDiffusionPipeline(**tiny_sd_components())
    plain.scheduler = EulerDiscreteScheduler.from_config(plain.scheduler.config, timestep_spacing="trailing")
    # the saved guidance and steps equal the same values given to a pipeline without saved settings
    np.testing.assert_array_equal(_draw(pipe), _draw(plain, guidance_scale=9.0, num_inference_steps=3))
    # a given argument wins over the saved one
    np.testing.assert_array_equal(
        _draw(pipe, guidance_scale=2.0, num_inference_steps=2), _draw(plain, guidance_scale=2.0, num_inference_steps=2)
    )
    assert not np.array_equal(_draw(pipe, guidance_scale=2.0), _draw(pipe))


class _Stop(Exception):
    pass


def test_a_model_without_sampling_settings_samples_as_its_parent(monkeypatch):
    from diffusers import StableDiffusionPipeline

    pipe = FreeATMDiffusionPipeline(**tiny_sd_components())
    assert pipe.sampling_config == SamplingConfig() and isinstance(pipe.scheduler, DDIMScheduler)
    received = []

    @functools.wraps(StableDiffusionPipeline.__call__)  # the parent's signature, which the call binds to
    def parent_call(self, *args, **kwargs):  # what the parent pipeline is handed, then stop
        received.append(kwargs)
        raise _Stop

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", parent_call)
    for settings in ({}, {"guidance_scale": 9.0, "num_inference_steps": 3}):
        pipe.set_sampling_config(SamplingConfig(**settings))
        with pytest.raises(_Stop):
            pipe(PROMPT, objects=["dog"])
        with pytest.raises(_Stop):
            pipe(PROMPT, objects=["dog"], guidance_scale=2.0)
    # nothing saved: the parent's own defaults apply; saved: they are passed unless the call gives its own
    assert "guidance_scale" not in received[0] and "num_inference_steps" not in received[0]
    assert received[1]["guidance_scale"] == 2.0 and "num_inference_steps" not in received[1]
    assert received[2]["guidance_scale"] == 9.0 and received[2]["num_inference_steps"] == 3
    assert received[3]["guidance_scale"] == 2.0 and received[3]["num_inference_steps"] == 3


def test_generate_records_the_saved_settings_and_a_flag_overrides_them(saved_folder, tmp_path):
    common = ["generate", "--model", str(saved_folder), "--num-images", "2", "--batch-size", "2"]
    main([*common, "--out", str(tmp_path / "saved")])
    recorded = json.loads((tmp_path / "saved" / "generation_config.json").read_text())["sampling_config"]
    assert recorded == {**SamplingConfig().to_dict(), **SAVED}
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "| scheduler | euler |" in card and "| guidance_scale | 9.0 |" in card
    flags = ["--guidance-scale", "2", "--scheduler", "dpm_solver_2m", "--steps", "2"]
    main([*common, "--out", str(tmp_path / "given"), *flags])
    given = json.loads((tmp_path / "given" / "generation_config.json").read_text())["sampling_config"]
    assert given == {**recorded, "guidance_scale": 2.0, "scheduler": "dpm_solver_2m", "num_inference_steps": 2}
    # the rows are the images the overriding settings draw
    from datasets import load_dataset

    row = load_dataset(str(tmp_path / "given"), split="train")[0]
    pipe = load_pipeline(str(saved_folder))
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(
        pipe.scheduler.config, algorithm_type="dpmsolver++", solver_order=2
    )
    out = pipe(
        row["prompt"],
        objects=row["objects"],
        guidance_scale=2.0,
        num_inference_steps=2,
        latents=pipe.initial_latents([row["seed"]], *pipe.default_image_size),
    )
    np.testing.assert_array_equal(np.asarray(row["image"]), np.asarray(out.images[0]))


def test_generate_without_saved_settings_keeps_its_defaults(tmp_path):
    out = tmp_path / "plain"
    main(["generate", "--model", "tiny-random", "--num-images", "1", "--batch-size", "1", "--out", str(out)])
    recorded = json.loads((out / "generation_config.json").read_text())["sampling_config"]
    assert recorded == {**SamplingConfig().to_dict(), "num_inference_steps": 25, "guidance_scale": 5.0}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"guidance_scale": 1e30}, r"guidance_scale must lie in \[0, 100\], got 1e\+30"),
        ({"num_inference_steps": 0}, r"num_inference_steps must be an int in \[1, 1000\], got 0"),
        ({"scheduler": "pndm"}, r"scheduler must be one of \['ddim', 'dpm_solver_2m', 'euler'\], got 'pndm'"),
        ({"timestep_spacing": "middle"}, "timestep_spacing must be one of .*, got 'middle'"),
        ({"guidance_rescale": 2.0}, r"guidance_rescale must lie in \[0, 1\], got 2.0"),
        ({"sampler": "ddim"}, r"unknown sampling settings \['sampler'\]"),
    ],
)
def test_bad_sampling_settings_name_the_value(values, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig.from_dict(values)


def test_a_bad_sampling_flag_is_one_line_before_any_model_loads(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", "no/such-model", "--scheduler", "pndm", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and not (tmp_path / "x").exists()
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "scheduler must be one of" in error and "'pndm'" in error


def test_a_flow_matching_pipeline_refuses_a_scheduler_with_the_reason():
    with pytest.raises(ValueError, match="FlowMatchEulerDiscreteScheduler samples a flow"):
        FreeATMStableDiffusion3Pipeline(**tiny_sd3_components(), sampling_config={"scheduler": "ddim"})
    pipe = FreeATMStableDiffusion3Pipeline(**tiny_sd3_components(), sampling_config={"guidance_scale": 3.0})
    assert pipe.sampling_config.guidance_scale == 3.0
