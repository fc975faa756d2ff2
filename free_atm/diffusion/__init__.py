"""The Free-ATM pipelines (SD 1.x/2.x and SDXL), their outputs, and randomly initialised components."""

from .output import FreeATMStableDiffusionPipelineOutput, FreeATMStableDiffusionXLPipelineOutput
from .stable_diffusion import FreeATMDiffusionPipeline
from .stable_diffusion_xl import FreeATMStableDiffusionXLPipeline

__all__ = [
    "FreeATMDiffusionPipeline",
    "FreeATMStableDiffusionPipelineOutput",
    "FreeATMStableDiffusionXLPipeline",
    "FreeATMStableDiffusionXLPipelineOutput",
]
