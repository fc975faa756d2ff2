"""Models by name: the table of named models (the shipped ``shapes`` model, ``tiny-random``), loading a
name, folder or Hub id as a Free-ATM pipeline, and the shipped model itself (:mod:`.shapes`)."""

from .registry import (
    NAMED_MODELS,
    NamedModel,
    check_lora_reference,
    check_model_reference,
    denoiser_skeleton,
    load_lora,
    load_pipeline,
    named_model,
)

__all__ = [
    "NAMED_MODELS",
    "NamedModel",
    "check_lora_reference",
    "check_model_reference",
    "denoiser_skeleton",
    "load_lora",
    "load_pipeline",
    "named_model",
]
