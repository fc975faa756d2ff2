"""Segmentation models on pretrained backbones, with transformers' UperNet head.

A ResNet goes into ``UperNetForSemanticSegmentation`` through ``backbone_config`` (its stages are the
pyramid). A ViT has a single stride-p feature grid, so it gets ViTDet's simple feature pyramid first
(the grid deconvolved to 4x and 2x, kept, and max-pooled to 1/2), then the same ``UperNetHead``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    PretrainedConfig,
    PreTrainedModel,
    ResNetConfig,
    ResNetModel,
    UperNetConfig,
    UperNetForSemanticSegmentation,
    ViTConfig,
    ViTModel,
)
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.models.upernet.modeling_upernet import UperNetHead

#: what ``segmentation_model`` looks for inside a pretraining output folder
BACKBONE_SUBFOLDERS = ("backbone", "encoder")


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's pyramid from one grid: scales 4, 2, 1 and 1/2 of it, each projected to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half = in_channels // 2
        self.rescale = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose2d(in_channels, half, 2, stride=2),
                    LayerNorm2d(half),
                    nn.GELU(),
                    nn.ConvTranspose2d(half, half // 2, 2, stride=2),
                ),
                nn.ConvTranspose2d(in_channels, half, 2, stride=2),
                nn.Identity(),
                nn.MaxPool2d(2),
            ]
        )
        widths = (half // 2, half, in_channels, in_channels)
        self.project = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(width, out_channels, 1, bias=False),
                LayerNorm2d(out_channels),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                LayerNorm2d(out_channels),
            )
            for width in widths
        )

    def forward(self, grid: torch.Tensor) -> list[torch.Tensor]:
        return [project(rescale(grid)) for rescale, project in zip(self.rescale, self.project)]


class ViTUperNetConfig(PretrainedConfig):
    """``vit_config``: the backbone; ``pyramid_channels``: each pyramid level's width; ``hidden_size`` and
    ``pool_scales``: the UperNet head's, as in ``UperNetConfig``; ``loss_ignore_index``: label not scored."""

    model_type = "free_atm_vit_upernet"
    sub_configs = {"vit_config": ViTConfig}

    def __init__(
        self,
        vit_config: dict | ViTConfig | None = None,
        pyramid_channels: int = 64,
        hidden_size: int = 64,
        pool_scales: tuple[int, ...] = (1, 2, 3, 6),
        loss_ignore_index: int = 255,
        **kwargs,
    ):
        if isinstance(vit_config, dict):
            vit_config = ViTConfig(**vit_config)
        self.vit_config = vit_config if vit_config is not None else ViTConfig()
        self.pyramid_channels, self.hidden_size = pyramid_channels, hidden_size
        self.pool_scales, self.loss_ignore_index = list(pool_scales), loss_ignore_index
        super().__init__(**kwargs)


class ViTUperNetForSemanticSegmentation(PreTrainedModel):
    """A ViT, its simple feature pyramid and transformers' ``UperNetHead``; logits at the input's size."""

    config_class = ViTUperNetConfig
    main_input_name = "pixel_values"

    def __init__(self, config: ViTUperNetConfig):
        super().__init__(config)
        self.vit = ViTModel(config.vit_config, add_pooling_layer=False)
        self.pyramid = SimpleFeaturePyramid(config.vit_config.hidden_size, config.pyramid_channels)
        self.decode_head = UperNetHead(config, in_channels=[config.pyramid_channels] * 4)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """The ViT initialises itself; the pyramid and head keep PyTorch's defaults (as UperNet's convs)."""

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs):
        hidden = self.vit(pixel_values).last_hidden_state[:, 1:]  # the patches, row by row
        rows = pixel_values.shape[-2] // self.config.vit_config.patch_size
        grid = hidden.transpose(1, 2).unflatten(2, (rows, -1))
        logits = self.decode_head(self.pyramid(grid))
        logits = nn.functional.interpolate(logits, size=pixel_values.shape[2:], mode="bilinear", align_corners=False)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels, ignore_index=self.config.loss_ignore_index)
        return SemanticSegmenterOutput(loss=loss, logits=logits)


def backbone_folder(path: str | Path) -> str:
    """``path`` itself, or the ``backbone/`` (contrastive) or ``encoder/`` (MAE) folder of a pretraining
    output; Hub ids pass through."""
    for name in BACKBONE_SUBFOLDERS:
        if (Path(path) / name / "config.json").is_file():
            return str(Path(path) / name)
    return str(path)


def segmentation_model(backbone: str | Path, num_labels: int, head_channels: int = 64) -> PreTrainedModel:
    """A segmentation model whose backbone holds the pretrained weights of ``backbone`` (a ResNet or ViT
    folder, a pretraining output folder holding one, or a Hub id) and whose head is freshly initialised."""
    path = backbone_folder(backbone)
    config = AutoConfig.from_pretrained(path)
    if config.model_type == "resnet":
        settings = {k: v for k, v in config.to_dict().items() if k not in ("out_features", "out_indices")}
        stages = ResNetConfig(**settings, out_features=[f"stage{i + 1}" for i in range(len(config.depths))])
        model = UperNetForSemanticSegmentation(
            UperNetConfig(
                backbone_config=stages, num_labels=num_labels, hidden_size=head_channels, use_auxiliary_head=False
            )
        )
        model.backbone.load_state_dict(ResNetModel.from_pretrained(path).state_dict())
        return model
    if config.model_type == "vit":
        model = ViTUperNetForSemanticSegmentation(
            ViTUperNetConfig(config, pyramid_channels=head_channels, hidden_size=head_channels, num_labels=num_labels)
        )
        weights = ViTModel.from_pretrained(path).state_dict()  # segmentation reads the patches, not the pooler
        model.vit.load_state_dict({k: v for k, v in weights.items() if not k.startswith("pooler.")})
        return model
    raise ValueError(
        f"segmentation fine-tuning takes a ResNet or ViT backbone; {backbone} holds a {config.model_type!r} model"
    )
