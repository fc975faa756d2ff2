"""Custom-pipeline shim: ``DiffusionPipeline.from_pretrained(model, custom_pipeline=<this folder>,
trust_remote_code=True)`` loads Stable Diffusion 1.x/2.x as ``FreeATMDiffusionPipeline``."""

from free_atm.diffusion import FreeATMDiffusionPipeline

# diffusers runs every local pipeline.py into one module (diffusers_modules.local.pipeline) and looks there
# for the one pipeline class: forget the classes that another family's shim left in it
for _name in [n for n in globals() if n.startswith("FreeATM") and n != "FreeATMDiffusionPipeline"]:
    del globals()[_name]

__all__ = ["FreeATMDiffusionPipeline"]
