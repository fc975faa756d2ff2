"""Custom-pipeline shim: ``DiffusionPipeline.from_pretrained(model, custom_pipeline=<this folder>,
trust_remote_code=True)`` loads Stable Diffusion 3.x as ``FreeATMStableDiffusion3Pipeline``."""

from free_atm.diffusion import FreeATMStableDiffusion3Pipeline

__all__ = ["FreeATMStableDiffusion3Pipeline"]
