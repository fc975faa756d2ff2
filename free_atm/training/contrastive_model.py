"""Instance-level contrastive model (Free-ATM section 3.3.1): a transformers backbone, attentive pooling of
the final feature map per object (eq. 2), a projection MLP, and NT-Xent over objects (eq. 3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel, ResNetConfig
from transformers.utils import ModelOutput

from .losses import nt_xent

LEVELS = ("instance", "image")


class InstanceContrastiveConfig(PretrainedConfig):
    """``backbone_config``: any vision backbone config whose ``AutoModel`` returns ``last_hidden_state``
    ``(B, C, h, w)`` (ResNet by default); ``level``: ``"instance"`` (attentive pooling per object) or
    ``"image"`` (global average pooling, the published SimCLR)."""

    model_type = "free_atm_contrastive"

    def __init__(
        self,
        backbone_config: dict | PretrainedConfig | None = None,
        level: str = "instance",
        projection_dim: int = 128,
        hidden_dim: int = 512,
        logit_temperature: float = 0.2,
        **kwargs,
    ):
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        if backbone_config is None:
            backbone_config = ResNetConfig()
        if isinstance(backbone_config, dict):
            backbone_config = AutoConfig.for_model(**backbone_config)
        self.backbone_config = backbone_config
        self.level, self.projection_dim, self.hidden_dim, self.logit_temperature = (
            level,
            projection_dim,
            hidden_dim,
            logit_temperature,
        )
        super().__init__(**kwargs)

    def to_dict(self):
        output = super().to_dict()
        output["backbone_config"] = self.backbone_config.to_dict()
        return output


@dataclass
class ContrastiveOutput(ModelOutput):
    loss: torch.Tensor | None = None
    valid_objects: torch.Tensor | None = None
    positive_top1: torch.Tensor | None = None


def attentive_pool(features: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``z_m = sum_ij a_ij z_ij / sum_ij a_ij`` for features ``(B, C, h, w)`` and maps ``(B, M, H, W)``;
    maps are area-resized to the feature grid; an empty map gives a zero vector. Returns ``(B, M, C)``."""
    weights = F.adaptive_avg_pool2d(maps.to(features.dtype), features.shape[-2:]).flatten(2)  # (B, M, hw)
    pooled = weights @ features.flatten(2).transpose(1, 2)  # (B, M, C)
    return pooled / weights.sum(-1, keepdim=True).clamp_min(1e-6)


class InstanceContrastiveModel(PreTrainedModel):
    config_class = InstanceContrastiveConfig
    base_model_prefix = "contrastive"
    main_input_name = "pixel_values_1"

    def __init__(self, config: InstanceContrastiveConfig):
        super().__init__(config)
        self.backbone = AutoModel.from_config(config.backbone_config)
        width = self._feature_width(config.backbone_config)
        self.projection = nn.Sequential(
            nn.Linear(width, config.hidden_dim),
            nn.BatchNorm1d(config.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden_dim, config.projection_dim),
        )
        self.post_init()

    @staticmethod
    def _feature_width(backbone_config: PretrainedConfig) -> int:
        sizes = getattr(backbone_config, "hidden_sizes", None)
        return sizes[-1] if sizes else backbone_config.hidden_size

    def embed(self, pixel_values: torch.Tensor, object_maps: torch.Tensor) -> torch.Tensor:
        """Projected embeddings ``(B * M, D)`` of every object slot (image level: the image, repeated)."""
        features = self.backbone(pixel_values).last_hidden_state
        if self.config.level == "instance":
            pooled = attentive_pool(features, object_maps)
        else:
            pooled = features.mean((-2, -1)).unsqueeze(1).expand(-1, object_maps.shape[1], -1)
        return self.projection(pooled.flatten(0, 1))

    def forward(
        self, pixel_values_1, pixel_values_2, object_maps_1, object_maps_2, object_valid, **kwargs
    ) -> ContrastiveOutput:
        z1, z2 = self.embed(pixel_values_1, object_maps_1), self.embed(pixel_values_2, object_maps_2)
        valid = object_valid.flatten()
        if self.config.level == "image":  # one pair per image: its first valid slot stands for it
            first = torch.zeros_like(object_valid)
            first[:, 0] = True
            valid = first.flatten()
        loss, metrics = nt_xent(z1, z2, valid, self.config.logit_temperature)
        return ContrastiveOutput(loss=loss, **metrics)


AutoConfig.register(InstanceContrastiveConfig.model_type, InstanceContrastiveConfig)
AutoModel.register(InstanceContrastiveConfig, InstanceContrastiveModel)
