"""Masked datasets from a Free-ATM pipeline, generated (:mod:`.generate`) or annotated from your own images
(:mod:`.annotate`): sharded over processes, resumable, with their cards."""

from .annotate import AnnotationConfig, annotate_dataset
from .generate import GenerationConfig, generate_dataset

__all__ = ["AnnotationConfig", "GenerationConfig", "annotate_dataset", "generate_dataset"]
