"""free-atm: masks for free from the cross-attention of text-to-image diffusion models."""

from .attention import CaptureConfig
from .diffusion import (
    FreeATMDiffusionPipeline,
    FreeATMFluxPipeline,
    FreeATMStableDiffusion3Pipeline,
    FreeATMStableDiffusionXLPipeline,
)
from .paths import custom_pipeline_path

__version__ = "0.1.0.dev0"

__all__ = [
    "CaptureConfig",
    "FreeATMDiffusionPipeline",
    "FreeATMFluxPipeline",
    "FreeATMStableDiffusion3Pipeline",
    "FreeATMStableDiffusionXLPipeline",
    "custom_pipeline_path",
]
