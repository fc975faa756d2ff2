"""Attention capture: the processors (UNet cross-attention, SD3/Flux joint attention), the aggregator, and
their install/restore."""

from .aggregator import AttentionAggregator, layer_grid, resize_maps
from .capture import (
    capture_attention,
    capture_cross_attention,
    capture_joint_attention,
    cross_attention_processor_names,
    joint_attention_processor_names,
)
from .config import MAP_METHODS, NORMALIZATIONS, THRESHOLD_METHODS, CaptureConfig
from .joint_processor import (
    FluxAttentionCaptureProcessor,
    JointAttentionCaptureProcessor,
    SD3AttentionCaptureProcessor,
    joint_text_probs,
    output_space_probs,
)
from .processor import AttentionCaptureProcessor, cross_attention_probs

__all__ = [
    "MAP_METHODS",
    "NORMALIZATIONS",
    "THRESHOLD_METHODS",
    "AttentionAggregator",
    "AttentionCaptureProcessor",
    "CaptureConfig",
    "FluxAttentionCaptureProcessor",
    "JointAttentionCaptureProcessor",
    "SD3AttentionCaptureProcessor",
    "capture_attention",
    "capture_cross_attention",
    "capture_joint_attention",
    "cross_attention_probs",
    "cross_attention_processor_names",
    "joint_attention_processor_names",
    "joint_text_probs",
    "layer_grid",
    "output_space_probs",
    "resize_maps",
]
