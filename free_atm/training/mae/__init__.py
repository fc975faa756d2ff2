"""Attention-guided masked autoencoding (Free-ATM section 3.3.2) with transformers' ``ViTMAEForPreTraining``:
the masked patches move during training from random to those the free attention maps mark as objects."""

from .encoder import vit_encoder
from .masking import guided_noise, guided_ratio_at, num_masked_patches, patch_scores
from .recipe import MAEDataArguments, MAEModelArguments, MAETrainingArguments, image_processor, mae_trainer
from .reconstruction import reconstruction_grid
from .trainer import GuidedMAETrainer

__all__ = [
    "GuidedMAETrainer",
    "MAEDataArguments",
    "MAEModelArguments",
    "MAETrainingArguments",
    "guided_noise",
    "guided_ratio_at",
    "image_processor",
    "mae_trainer",
    "num_masked_patches",
    "patch_scores",
    "reconstruction_grid",
    "vit_encoder",
]
