"""Load a Free-ATM pipeline by name: the shipped ``shapes`` model, ``tiny-random``, a folder or a Hub id."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from ..usage import names_a_folder
from .flux import FreeATMFluxPipeline
from .stable_diffusion import FreeATMDiffusionPipeline
from .stable_diffusion_3 import FreeATMStableDiffusion3Pipeline
from .stable_diffusion_xl import FreeATMStableDiffusionXLPipeline

SPECIAL_MODELS = ("shapes", "tiny-random")


def check_model_reference(model: str) -> None:
    """Raise ``ValueError`` unless ``model`` can name a pipeline: a special name, a folder holding a
    ``model_index.json``, or a well-formed Hub id (whether the Hub has it is known only by asking)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    accepted = f"a diffusers pipeline folder, a Hub id, or one of {', '.join(SPECIAL_MODELS)}"
    if model in SPECIAL_MODELS:
        return
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ValueError(
                f"model {model!r} is not a diffusers pipeline folder (no model_index.json); pass {accepted}"
            )
        return
    if names_a_folder(model) or model.count("/") > 1:
        raise ValueError(f"model folder {model!r} does not exist; pass {accepted}")
    try:
        validate_repo_id(model)
    except HFValidationError:
        raise ValueError(f"model {model!r} is neither a folder nor a valid Hub id; pass {accepted}") from None


def pipeline_class_for(model: str) -> type[DiffusionPipeline]:
    """The Free-ATM class for a folder or Hub id, read from its ``model_index.json``: SD 1.x/2.x, SDXL, SD3
    or Flux (stock or Free-ATM class names alike); another family is a ``ValueError`` naming its class."""
    index = Path(model) / "model_index.json"
    if index.is_file():
        class_name = json.loads(index.read_text())["_class_name"]
    else:
        class_name = DiffusionPipeline.load_config(model)["_class_name"]
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
