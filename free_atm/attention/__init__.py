"""Attention capture: the processors (UNet cross-attention, SD3/Flux joint attention), the aggregator, and
their install/restore. Names are imported on first use, so the settings (:mod:`.config`) and the
aggregator load without diffusers."""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "aggregator": ["AttentionAggregator", "layer_grid", "resize_maps"],
        "capture": [
            "capture_attention",
            "capture_cross_attention",
            "capture_joint_attention",
            "cross_attention_processor_names",
            "joint_attention_processor_names",
        ],
        "config": ["MAP_METHODS", "NORMALIZATIONS", "THRESHOLD_METHODS", "CaptureConfig"],
        "joint_processor": [
            "FluxAttentionCaptureProcessor",
            "JointAttentionCaptureProcessor",
            "SD3AttentionCaptureProcessor",
            "joint_text_probs",
            "output_space_probs",
        ],
        "processor": ["AttentionCaptureProcessor", "cross_attention_probs"],
    },
)
