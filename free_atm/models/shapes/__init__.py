"""The shipped default model: a small text-to-image UNet trained on the shapes world, its architecture,
its training losses (denoising, token grounding), its weights (``default_model/``), and a small SD3 built
from its parts."""

from .architecture import default_model_path, shapes_prompt, shapes_vocabulary

__all__ = ["default_model_path", "shapes_prompt", "shapes_vocabulary"]
