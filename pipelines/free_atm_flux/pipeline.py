"""Custom-pipeline shim: ``DiffusionPipeline.from_pretrained(model, custom_pipeline=<this folder>,
trust_remote_code=True)`` loads Flux as ``FreeATMFluxPipeline``."""

from free_atm.diffusion import FreeATMFluxPipeline

__all__ = ["FreeATMFluxPipeline"]
