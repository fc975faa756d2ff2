"""The Free-ATM pipeline class of a diffusers folder or Hub id, read from its ``model_index.json``."""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import DiffusionPipeline

from .flux import FreeATMFluxPipeline
from .stable_diffusion import FreeATMDiffusionPipeline
from .stable_diffusion_3 import FreeATMStableDiffusion3Pipeline
from .stable_diffusion_xl import FreeATMStableDiffusionXLPipeline


def pipeline_class_for(model: str) -> type[DiffusionPipeline]:
    """The Free-ATM class for a folder or Hub id, read from its ``model_index.json``: SD 1.x/2.x, SDXL, SD3
    or Flux (stock or Free-ATM class names alike); another family is a ``ValueError`` naming its class."""
    index = Path(model) / "model_index.json"
    if index.is_file():
        class_name = json.loads(index.read_text())["_class_name"]
    else:
        class_name = DiffusionPipeline.load_config(model)["_class_name"]
    if isinstance(class_name, list):  # a custom pipeline's [module, class], as Free-ATM pipelines save it
        class_name = class_name[1]
    families = [
        ("StableDiffusion3", FreeATMStableDiffusion3Pipeline),
        ("Flux", FreeATMFluxPipeline),
        ("XL", FreeATMStableDiffusionXLPipeline),
        ("Diffusion", FreeATMDiffusionPipeline),
    ]
    for marker, pipeline_class in families:
        if marker in class_name:
            return pipeline_class
    raise ValueError(
        f"model {model!r} is a {class_name}; free-atm captures Stable Diffusion 1.x/2.x, SDXL, SD3 and Flux pipelines"
    )
