"""DifFeed: the U-Net run twice at the same noisy input and t; in the second pass the first pass's decoder
features come back, each through its own 1x1 conv, BatchNorm and ReLU, added to the output of the down-path
block whose skip connection feeds that decoder block; a DifFormer reads the second pass. Only the feedback
layers and the DifFormer train (the U-Net stays frozen; gradients reach the feedback through it).
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration import DifFeedConfig
from .difformer import DifFormer


class DifFeed(DifFormer):
    config_class = DifFeedConfig

    def __init__(self, config: DifFeedConfig):
        super().__init__(config)
        self.feedback = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())
            for c_in, c_out in zip(config.feedback_channels, config.target_channels)
        )
        self.post_init()

    def features_of(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        if self.extractor is None:
            raise ValueError("DifFeed runs the U-Net twice: attach a feature extractor")
        with torch.no_grad():
            first = self.extractor(pixel_values, blocks=self.config.feedback_blocks)
        additions = {
            (t, target): layer(first[(t, block)].to(self.device, torch.float32))
            for t in self.config.timesteps
            for block, target, layer in zip(self.config.feedback_blocks, self.config.feedback_targets, self.feedback)
        }
        second = self.extractor(pixel_values, additions=additions)
        return [second[key].to(self.device) for key in self.config.feature_keys()]

    def forward(self, pixel_values: torch.Tensor | None = None, features=None, labels=None, **kwargs):
        if features is not None:
            raise ValueError("DifFeed reads images (two U-Net passes), not cached features")
        return super().forward(pixel_values=pixel_values, labels=labels)
