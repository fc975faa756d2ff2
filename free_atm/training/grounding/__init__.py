"""A grounding adapter for any diffusers generator: LoRA (peft) on the attention layers the capture reads,
trained with the generator's own loss plus the grounding loss on its captured maps, so that its free
masks sharpen; saved in diffusers' LoRA format (``pipe.load_lora_weights``)."""

from .adapter import adapter_targets, add_grounding_adapter, attention_layers, save_grounding_adapter
from .loss import grounding_loss, token_columns
from .pixel_loss import pixel_loss
from .step import GroundingLosses, grounding_losses

__all__ = [
    "GroundingLosses",
    "adapter_targets",
    "add_grounding_adapter",
    "attention_layers",
    "grounding_loss",
    "grounding_losses",
    "pixel_loss",
    "save_grounding_adapter",
    "token_columns",
]
