"""DifFormer: the blocks and noise levels of a diffusion U-Net fused by attention (diffssl's fusion head).

Per block: average-pooled to at most ``pool_size`` (a grid already smaller is kept), LayerNorm over the
whole map, a 1x1 conv to ``hidden_size``; its positions become tokens. The tokens of all blocks of one
noise level, after a learned CLS token, go through pre-norm transformer blocks (GELU MLP); the same
layers serve every level, and the CLS outputs of the levels, concatenated, feed one linear classifier.
As in diffssl there are no position or block embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import DiffusionHeadModel
from .configuration import DifFormerConfig


class DifFormerFusion(nn.Module):
    """Tokens of several blocks of one noise level to the CLS output ``(B, hidden_size)``."""

    def __init__(self, config: DifFormerConfig):
        super().__init__()
        self.sizes = [[min(side, config.pool_size) for side in grid] for grid in config.block_grids]
        self.norms = nn.ModuleList(nn.LayerNorm([c, *size]) for c, size in zip(config.block_channels, self.sizes))
        self.projections = nn.ModuleList(nn.Conv2d(c, config.hidden_size, 1) for c in config.block_channels)
        self.cls = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        layer = nn.TransformerEncoderLayer(
            config.hidden_size, config.num_heads, config.mlp_ratio * config.hidden_size, dropout=0.0,
            activation="gelu", batch_first=True, norm_first=True,
        )  # fmt: skip
        self.transformer = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        tokens = [
            projection(norm(F.adaptive_avg_pool2d(m, size))).flatten(2).transpose(1, 2)
            for m, size, norm, projection in zip(maps, self.sizes, self.norms, self.projections)
        ]
        sequence = torch.cat([self.cls.expand(len(maps[0]), -1, -1), *tokens], dim=1)
        return self.transformer(sequence)[:, 0]


class DifFormer(DiffusionHeadModel):
    config_class = DifFormerConfig

    def __init__(self, config: DifFormerConfig):
        super().__init__(config)
        self.fusion = DifFormerFusion(config)
        self.classifier = nn.Linear(len(config.timesteps) * config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's own initialisation (diffssl's); the CLS token starts at zero."""

    def logits(self, features: list[torch.Tensor]) -> torch.Tensor:
        per_level = len(self.config.blocks)
        levels = [features[k : k + per_level] for k in range(0, len(features), per_level)]
        return self.classifier(torch.cat([self.fusion(maps) for maps in levels], dim=1))
