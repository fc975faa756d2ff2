"""BLIP's contrastive losses, one a module (ITM and LM are the model's own cross-entropies)."""

from .itc import itc_loss
from .itc_distilled import itc_distilled_loss

__all__ = ["itc_distilled_loss", "itc_loss"]
