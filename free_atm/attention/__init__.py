"""Cross-attention capture: the processor, the aggregator, and their install/restore."""

from .aggregator import AttentionAggregator, layer_grid, resize_maps
from .capture import capture_cross_attention, cross_attention_processor_names
from .config import THRESHOLD_METHODS, CaptureConfig
from .processor import AttentionCaptureProcessor, cross_attention_probs

__all__ = [
    "THRESHOLD_METHODS",
    "AttentionAggregator",
    "AttentionCaptureProcessor",
    "CaptureConfig",
    "capture_cross_attention",
    "cross_attention_probs",
    "cross_attention_processor_names",
    "layer_grid",
    "resize_maps",
]
