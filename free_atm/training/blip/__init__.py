"""Vision-language pretraining with position prompts (Free-ATM section 3.3.3): each object's caption
prompt says in which block of the image its free mask lies."""

from .model import BlipForPretraining, BlipPretrainingOutput, blip_config, captioning_export, retrieval_export
from .prompts import PROMPT_MODES, object_blocks, position_prompt, prompted_caption
from .retrieval import retrieval_scores
from .tokenizer import train_caption_tokenizer
from .trainer import PositionPromptTrainer

__all__ = [
    "PROMPT_MODES",
    "PositionPromptTrainer",
    "blip_config",
    "BlipForPretraining",
    "BlipPretrainingOutput",
    "captioning_export",
    "object_blocks",
    "position_prompt",
    "prompted_caption",
    "retrieval_export",
    "retrieval_scores",
    "train_caption_tokenizer",
]
