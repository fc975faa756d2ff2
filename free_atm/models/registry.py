"""The models free-atm knows by name, and loading any model by reference: a name, a folder or a Hub id.

One table, :data:`NAMED_MODELS`, says for each name how its pipeline is built, which object phrases its
prompts are searched for, and how a generated dataset's prompts are drawn. Commands read the table
instead of testing names; every other reference is a diffusers pipeline folder or Hub id, whose prompts
come from the ImageNet label space.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from ..attention import CaptureConfig
from ..diffusion.families import pipeline_class_for
from ..diffusion.sampling import SamplingConfig
from ..paths import local_path
from ..prompts import ObjectPrompt, imagenet_vocabulary, template_prompt
from ..usage import load_reporting_failures, names_a_folder
from .shapes import default_model_path, shapes_prompt, shapes_vocabulary


def _from_folder(model: str, dtype: torch.dtype | None) -> DiffusionPipeline:
    """Pitfall: without a dtype, diffusers loads its models in float32 but transformers loads a text encoder
    in the dtype it was saved in, so a pipeline saved in float16 would come back mixed and fail in its
    first matrix product. ``None`` means float32 for every component, as diffusers' own default.

    A Hub id that cannot be fetched (no network, no such repo) is one line naming it
    (:func:`~free_atm.usage.load_reporting_failures`); a local folder was checked by
    :func:`check_model_reference`."""
    pipeline = load_reporting_failures(lambda: pipeline_class_for(model), model)
    return load_reporting_failures(lambda: pipeline.from_pretrained(model, dtype=dtype or torch.float32), model)


def _shapes(model: str, dtype: torch.dtype | None) -> DiffusionPipeline:
    return _from_folder(default_model_path(), dtype)


def _tiny_random(model: str, dtype: torch.dtype | None) -> DiffusionPipeline:
    from ..diffusion import FreeATMDiffusionPipeline
    from ..testing import tiny_sd_components

    pipe = FreeATMDiffusionPipeline(**tiny_sd_components())
    return pipe if dtype is None else pipe.to(dtype=dtype)


@dataclass(frozen=True)
class NamedModel:
    """A model known by name.

    Args:
        name: what ``--model`` accepts.
        description: one line for help texts.
        build: the Free-ATM pipeline, given the reference and a dtype (``None``: float32).
        vocabulary: object phrases looked for in prompts that name no objects.
        prompt: the prompt of sample ``index`` of a dataset generated with ``seed`` (no prompt file).
        example_prompt: a prompt the model draws well, for the demo.
        folder: the pipeline folder the model is read from, or ``None`` for one built from code.
    """

    name: str
    description: str
    build: Callable[[str, torch.dtype | None], DiffusionPipeline]
    vocabulary: Callable[[], list[str]] = imagenet_vocabulary
    prompt: Callable[[int, int], ObjectPrompt] = template_prompt
    example_prompt: str = "a photo of a golden retriever and a tabby cat on a sofa"
    folder: Callable[[], Path] | None = None


NAMED_MODELS: dict[str, NamedModel] = {
    model.name: model
    for model in (
        NamedModel(
            "shapes",
            "the shipped model of coloured shapes (runs on a CPU)",
            _shapes,
            vocabulary=shapes_vocabulary,
            prompt=shapes_prompt,
            example_prompt="a red triangle, a yellow cross and a purple square on a black background",
            folder=default_model_path,
        ),
        NamedModel("tiny-random", "a tiny SD 1.x with random weights, for smoke tests", _tiny_random),
    )
}
#: what every folder or Hub id is: a pipeline prompted from the ImageNet label space
ANY_MODEL = NamedModel("", "a diffusers pipeline folder or Hub id", _from_folder)


def named_model(model: str) -> NamedModel:
    """The table's entry for ``model``, or the entry every folder and Hub id shares."""
    return NAMED_MODELS.get(model, ANY_MODEL)


def model_source(model: str) -> str | None:
    """Where ``model``'s files are: a named model's folder, the folder or Hub id itself, or ``None`` for a
    named model built from code."""
    if model not in NAMED_MODELS:
        return model
    folder = NAMED_MODELS[model].folder
    return None if folder is None else str(folder())


def saved_sampling(model: str) -> SamplingConfig:
    """The sampling settings saved in ``model``'s folder (the shipped model's for ``"shapes"``), read
    without loading it; a Hub id or a folder without them gives an empty config."""
    source = model_source(model)
    index = None if source is None else local_path(source) / "model_index.json"
    if index is None or not index.is_file():
        return SamplingConfig.from_dict(None)
    return SamplingConfig.from_dict(json.loads(index.read_text()).get("sampling_config"))


def check_model_reference(model: str) -> None:
    """Raise ``ValueError`` unless ``model`` can name a pipeline: a name of :data:`NAMED_MODELS`, a folder
    holding a ``model_index.json``, or a well-formed Hub id (whether the Hub has it is known only by asking)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    accepted = f"a diffusers pipeline folder, a Hub id, or one of {', '.join(NAMED_MODELS)}"
    if model in NAMED_MODELS:
        return
    path = local_path(model)
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ValueError(
                f"model {model!r} is not a diffusers pipeline folder (no model_index.json); pass {accepted}"
            )
        check_pipeline_folder(path)
        return
    if names_a_folder(model) or model.count("/") > 1:
        raise ValueError(f"model folder {model!r} does not exist; pass {accepted}")
    try:
        validate_repo_id(model)
    except HFValidationError:
        raise ValueError(f"model {model!r} is neither a folder nor a valid Hub id; pass {accepted}") from None


def load_pipeline(model: str = "shapes", device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """A Free-ATM pipeline of ``model`` (a name, folder or Hub id) on ``device``, with the progress bar off
    (callers show their own)."""
    pipe = named_model(model).build(model, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def denoiser_skeleton(model: str) -> torch.nn.Module:
    """``model``'s denoiser (UNet or transformer) built from its config alone, its weights left on the meta
    device (none is read; a Hub id fetches its two config files): what a setting about the denoiser's
    layers is checked against before the model loads. A named model built from code is built."""
    from accelerate import init_empty_weights

    reference = model_source(model)
    if reference is None:
        return named_model(model).build(model, None).denoiser
    index = load_reporting_failures(lambda: DiffusionPipeline.load_config(reference), model)
    name = "transformer" if "transformer" in index else "unet"
    library, class_name = index[name]
    denoiser_class = getattr(importlib.import_module(library), class_name)
    config = load_reporting_failures(lambda: denoiser_class.load_config(reference, subfolder=name), model)
    with init_empty_weights():
        return denoiser_class.from_config(config)


def check_pipeline_folder(path: Path) -> None:
    """Raise ``ValueError`` naming the file when a pipeline folder's ``model_index.json`` is not a pipeline
    index (not JSON, no ``_class_name``), names a component whose subfolder is missing or empty, or holds
    capture or sampling settings that are not valid."""
    index_file = path / "model_index.json"
    try:
        index = json.loads(index_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{index_file} is not valid JSON ({error}); the model folder is damaged") from None
    if not isinstance(index, dict) or "_class_name" not in index:
        raise ValueError(f"{index_file} names no pipeline class (_class_name); the model folder is damaged")
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[:1] == [None] or None in entry:
            continue
        folder = path / name
        if not folder.is_dir() or not any(folder.iterdir()):
            raise ValueError(
                f"model folder {str(path)!r} is incomplete: model_index.json lists {name!r} but {folder} is missing "
                "or empty"
            )
    for key, settings in (("capture_config", CaptureConfig), ("sampling_config", SamplingConfig)):
        try:
            settings.from_dict(index.get(key))
        except (ValueError, TypeError) as error:
            raise ValueError(f"{index_file}: its saved {key} is not valid ({error}); fix or remove it") from None


#: the largest adapter weight ``--lora-scale`` takes
MAX_LORA_SCALE = 4.0


def check_lora_reference(lora: str | None, scale: float = 1.0) -> None:
    """Raise ``ValueError`` unless ``lora`` is ``None``, a folder holding a LoRA adapter in diffusers' format
    (``pytorch_lora_weights.safetensors``) or a well-formed Hub id, and ``scale`` lies in [0, 4]."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not (math.isfinite(scale) and 0 <= scale <= MAX_LORA_SCALE):
        raise ValueError(f"--lora-scale must be in [0, {MAX_LORA_SCALE:g}], got {scale}")
    if lora is None:
        return
    if importlib.util.find_spec("peft") is None:
        raise ValueError("--lora needs peft, which diffusers loads adapters with: pip install 'free-atm[train]'")
    path = local_path(lora)
    if path.exists() or names_a_folder(lora):
        if not (path / "pytorch_lora_weights.safetensors").is_file():
            raise ValueError(f"--lora {lora} holds no pytorch_lora_weights.safetensors (a diffusers LoRA adapter)")
        return
    try:
        validate_repo_id(lora)
    except HFValidationError:
        raise ValueError(f"--lora {lora!r} is neither a folder nor a valid Hub id") from None


def load_lora(pipe, lora: str, scale: float = 1.0) -> None:
    """Load the LoRA adapter ``lora`` (a folder or Hub id) into ``pipe`` at weight ``scale``."""
    path = local_path(lora)
    source = str(path) if path.exists() else lora
    load_reporting_failures(lambda: pipe.load_lora_weights(source, adapter_name="lora"), lora, "LoRA adapter")
    pipe.set_adapters(["lora"], adapter_weights=[scale])
