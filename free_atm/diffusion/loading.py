"""Load a Free-ATM pipeline by name: the shipped ``shapes`` model, ``tiny-random``, a folder or a Hub id."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from .stable_diffusion import FreeATMDiffusionPipeline
from .stable_diffusion_xl import FreeATMStableDiffusionXLPipeline

SPECIAL_MODELS = ("shapes", "tiny-random")


def pipeline_class_for(model: str) -> type[DiffusionPipeline]:
    """The Free-ATM class for a folder or Hub id, read from its ``model_index.json`` (SDXL or SD 1.x/2.x)."""
    index = Path(model) / "model_index.json"
    if index.is_file():
        class_name = json.loads(index.read_text())["_class_name"]
    else:
        class_name = DiffusionPipeline.load_config(model)["_class_name"]
    return FreeATMStableDiffusionXLPipeline if "XL" in class_name else FreeATMDiffusionPipeline


def load_pipeline(model: str = "shapes", device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """A Free-ATM pipeline on ``device``, with the progress bar off (callers show their own)."""
    if model == "tiny-random":
        from .random_components import tiny_sd_components

        pipe = FreeATMDiffusionPipeline(**tiny_sd_components())
    else:
        if model == "shapes":
            from ..shapes.model import default_model_path

            model = default_model_path()
        pipe = pipeline_class_for(model).from_pretrained(model, torch_dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
