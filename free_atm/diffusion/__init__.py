"""The Free-ATM pipelines (SD 1.x/2.x, SDXL, SD3, Flux), their outputs, and their saved sampling settings.

Names are imported on first use (``lazy_loader``): reading a model's sampling settings
(:mod:`.sampling`) does not import every pipeline family.
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "flux": ["FreeATMFluxPipeline"],
        "output": [
            "FreeATMFluxPipelineOutput",
            "FreeATMStableDiffusion3PipelineOutput",
            "FreeATMStableDiffusionPipelineOutput",
            "FreeATMStableDiffusionXLPipelineOutput",
        ],
        "stable_diffusion": ["FreeATMDiffusionPipeline"],
        "stable_diffusion_3": ["FreeATMStableDiffusion3Pipeline"],
        "stable_diffusion_xl": ["FreeATMStableDiffusionXLPipeline"],
    },
)
