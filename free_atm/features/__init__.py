"""The diffusion U-Net itself as a frozen feature extractor, and the heads that classify from it (the second
seed: "Do text-free diffusion models learn discriminative visual representations?")."""

from .blocks import Block, skip_pairs
from .extractor import DiffusionFeatureExtractor
from .heads.configuration import DifFeedConfig, DifFormerConfig, DiffusionHeadConfig, LinearProbeConfig
from .heads.diffeed import DifFeed
from .heads.difformer import DifFormer
from .heads.linear import DiffusionLinearProbe
from .loading import load_feature_extractor

__all__ = [
    "Block",
    "DifFeed",
    "DifFeedConfig",
    "DifFormer",
    "DifFormerConfig",
    "DiffusionFeatureExtractor",
    "DiffusionHeadConfig",
    "DiffusionLinearProbe",
    "LinearProbeConfig",
    "load_feature_extractor",
    "skip_pairs",
]
