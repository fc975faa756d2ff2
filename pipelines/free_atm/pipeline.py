"""Custom-pipeline shim: ``DiffusionPipeline.from_pretrained(model, custom_pipeline=<this folder>,
trust_remote_code=True)`` loads Stable Diffusion 1.x/2.x as ``FreeATMDiffusionPipeline``."""

from free_atm.diffusion import FreeATMDiffusionPipeline

__all__ = ["FreeATMDiffusionPipeline"]
