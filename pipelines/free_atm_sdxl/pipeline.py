"""Custom-pipeline shim: ``DiffusionPipeline.from_pretrained(model, custom_pipeline=<this folder>,
trust_remote_code=True)`` loads SDXL as ``FreeATMStableDiffusionXLPipeline``."""

from free_atm.diffusion import FreeATMStableDiffusionXLPipeline

__all__ = ["FreeATMStableDiffusionXLPipeline"]
