"""free-atm: masks for free from the cross-attention of text-to-image diffusion models.

Names are imported on first use (``lazy_loader``), so ``import free_atm`` and its light submodules
(``free_atm.metrics``, the command's ``--help``) do not import every pipeline family.
"""

import lazy_loader as lazy

__version__ = "0.1.0.dev0"

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "attention": ["CaptureConfig"],
        "diffusion": [
            "FreeATMDiffusionPipeline",
            "FreeATMFluxPipeline",
            "FreeATMStableDiffusion3Pipeline",
            "FreeATMStableDiffusionXLPipeline",
        ],
        "paths": ["custom_pipeline_path"],
    },
)
