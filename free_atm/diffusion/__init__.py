"""The Free-ATM pipelines (SD 1.x/2.x, SDXL, SD3, Flux), their outputs, and randomly initialised components."""

from .flux import FreeATMFluxPipeline
from .output import (
    FreeATMFluxPipelineOutput,
    FreeATMStableDiffusion3PipelineOutput,
    FreeATMStableDiffusionPipelineOutput,
    FreeATMStableDiffusionXLPipelineOutput,
)
from .stable_diffusion import FreeATMDiffusionPipeline
from .stable_diffusion_3 import FreeATMStableDiffusion3Pipeline
from .stable_diffusion_xl import FreeATMStableDiffusionXLPipeline

__all__ = [
    "FreeATMDiffusionPipeline",
    "FreeATMFluxPipeline",
    "FreeATMFluxPipelineOutput",
    "FreeATMStableDiffusion3Pipeline",
    "FreeATMStableDiffusion3PipelineOutput",
    "FreeATMStableDiffusionPipelineOutput",
    "FreeATMStableDiffusionXLPipeline",
    "FreeATMStableDiffusionXLPipelineOutput",
]
