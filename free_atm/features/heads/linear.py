"""diffssl's linear probe: each feature map average-pooled to a small grid, flattened, one linear layer;
by default after a BatchNorm without affine parameters (MAE's linear probing: block features differ in
scale by orders of magnitude, which plain SGD or Adam on the raw features handles badly)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import DiffusionHeadModel
from .configuration import LinearProbeConfig


class DiffusionLinearProbe(DiffusionHeadModel):
    config_class = LinearProbeConfig

    def __init__(self, config: LinearProbeConfig):
        super().__init__(config)
        width = len(config.timesteps) * sum(config.block_channels) * config.pool_size**2
        self.norm = nn.BatchNorm1d(width, affine=False) if config.feature_norm else nn.Identity()
        self.classifier = nn.Linear(width, config.num_labels)
        self.post_init()

    def logits(self, features: list[torch.Tensor]) -> torch.Tensor:
        pooled = [F.adaptive_avg_pool2d(f, self.config.pool_size).flatten(1) for f in features]
        return self.classifier(self.norm(torch.cat(pooled, dim=1)))
