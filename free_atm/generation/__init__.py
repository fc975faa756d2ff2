"""Generating a masked dataset with a Free-ATM pipeline: sharded over processes, resumable, with its card."""

from .generate import GenerationConfig, generate_dataset

__all__ = ["GenerationConfig", "generate_dataset"]
