"""Instance-level contrastive model (Free-ATM section 3.3.1): a transformers backbone, attentive pooling of
the final feature map per object (eq. 2), a projection MLP, and NT-Xent over objects (eq. 3)."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel, ResNetConfig
from transformers.utils import ModelOutput

from ..distributed import gather_with_grad, world_size_and_rank
from ..momentum import enqueue, frozen_copies, momentum_update
from ..pooling import attentive_pool
from .losses import moco_infonce, nt_xent

LEVELS = ("instance", "image")
METHODS = ("simclr", "moco")


class InstanceContrastiveConfig(PretrainedConfig):
    """``backbone_config``: any vision backbone config whose ``AutoModel`` returns ``last_hidden_state``
    ``(B, C, h, w)`` (ResNet by default); ``level``: ``"instance"`` (attentive pooling per object) or
    ``"image"`` (global average pooling, the published SimCLR); ``method``: ``"simclr"`` (NT-Xent over the
    global batch) or ``"moco"`` (MoCo-v2: momentum key encoder and a queue of ``queue_size`` object keys)."""

    model_type = "free_atm_contrastive"

    def __init__(
        self,
        backbone_config: dict | PretrainedConfig | None = None,
        level: str = "instance",
        projection_dim: int = 128,
        hidden_dim: int = 512,
        logit_temperature: float = 0.2,
        method: str = "simclr",
        momentum: float = 0.99,
        queue_size: int = 4096,
        **kwargs,
    ):
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method, self.momentum, self.queue_size = method, momentum, queue_size
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
        if config.method == "moco":
            self.key_backbone = AutoModel.from_config(config.backbone_config)
            self.key_projection = copy.deepcopy(self.projection)
            self.register_buffer("queue", F.normalize(torch.randn(config.queue_size, config.projection_dim), dim=-1))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.post_init()
        if config.method == "moco":  # the key encoder starts as a copy and only follows by momentum
            frozen_copies([self.backbone, self.projection], [self.key_backbone, self.key_projection])

    @staticmethod
    def _feature_width(backbone_config: PretrainedConfig) -> int:
        sizes = getattr(backbone_config, "hidden_sizes", None)
        return sizes[-1] if sizes else backbone_config.hidden_size

    def embed(self, pixel_values: torch.Tensor, object_maps: torch.Tensor, key: bool = False) -> torch.Tensor:
        """Projected embeddings ``(B * M, D)`` of every object slot (image level: the image, repeated);
        ``key=True`` uses MoCo's momentum encoder."""
        backbone, projection = (self.key_backbone, self.key_projection) if key else (self.backbone, self.projection)
        features = backbone(pixel_values).last_hidden_state
        if self.config.level == "instance":
            pooled = attentive_pool(features, object_maps)
        else:
            pooled = features.mean((-2, -1)).unsqueeze(1).expand(-1, object_maps.shape[1], -1)
        return projection(pooled.flatten(0, 1))

    @torch.no_grad()
    def momentum_keys(self, pixel_values: torch.Tensor, object_maps: torch.Tensor) -> torch.Tensor:
        """MoCo's keys ``(B * M, D)`` from the momentum encoder, with shuffled BatchNorm across processes.

        Under DDP the images of all processes are gathered, dealt out again in one random order shared by
        every process, encoded, and put back in place, so that the BatchNorm statistics a key sees do not
        come from the batch its query is in (MoCo's ShuffleBN; the query encoder keeps per-process BN).
        Every process must hold the same number of images, as ``DistributedSampler`` ensures.
        """
        world_size, rank = world_size_and_rank()
        if world_size == 1:
            return self.embed(pixel_values, object_maps, key=True)
        all_pixels, all_maps = gather_with_grad(pixel_values), gather_with_grad(object_maps)
        order = torch.randperm(len(all_pixels), device=all_pixels.device)
        torch.distributed.broadcast(order, src=0)
        mine = order.view(world_size, -1)[rank]
        keys = self.embed(all_pixels[mine], all_maps[mine], key=True).view(len(mine), object_maps.shape[1], -1)
        restored = torch.empty_like(all_keys := gather_with_grad(keys))
        restored[order] = all_keys
        return restored.view(world_size, len(mine), *keys.shape[1:])[rank].flatten(0, 1)

    def forward(
        self, pixel_values_1, pixel_values_2, object_maps_1, object_maps_2, object_valid, **kwargs
    ) -> ContrastiveOutput:
        valid = object_valid.flatten()
        if self.config.level == "image":  # one pair per image: its first valid slot stands for it
            first = torch.zeros_like(object_valid)
            first[:, 0] = True
            valid = first.flatten()
        z1 = self.embed(pixel_values_1, object_maps_1)
        if self.config.method == "simclr":
            loss, metrics = nt_xent(
                z1, self.embed(pixel_values_2, object_maps_2), valid, self.config.logit_temperature
            )
            return ContrastiveOutput(loss=loss, **metrics)
        with torch.no_grad():
            if self.training:
                momentum_update(
                    [self.backbone, self.projection],
                    [self.key_backbone, self.key_projection],
                    self.config.momentum,
                )
            keys = self.momentum_keys(pixel_values_2, object_maps_2)
        loss, metrics = moco_infonce(z1[valid], keys[valid], self.queue.clone(), self.config.logit_temperature)
        all_keys, all_valid = gather_with_grad(keys), gather_with_grad(valid.float()).bool()  # fixed M: same shapes
        if self.training:
            enqueue([self.queue], self.queue_ptr, [all_keys[all_valid]])
        return ContrastiveOutput(loss=loss, valid_objects=all_valid.sum().float(), **metrics)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """``PreTrainedModel.save_pretrained`` with the code that loads the folder beside it: the config's
        ``auto_map`` names ``modeling_free_atm_contrastive``, a module that imports these classes from
        free_atm, so ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` loads the model (and
        every checkpoint) in a process that never imported free_atm (it must be installed)."""
        self.config.auto_map = {
            "AutoConfig": f"{REMOTE_CODE}.InstanceContrastiveConfig",
            "AutoModel": f"{REMOTE_CODE}.InstanceContrastiveModel",
        }
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        (Path(save_directory) / f"{REMOTE_CODE}.py").write_text(
            '"""Loads free-atm\'s instance contrastive model (pip install free-atm)."""\n\n'
            "from free_atm.training.contrastive.model import InstanceContrastiveConfig, InstanceContrastiveModel\n\n"
            '__all__ = ["InstanceContrastiveConfig", "InstanceContrastiveModel"]\n'
        )
        super().save_pretrained(save_directory, *args, **kwargs)


#: the module saved beside the model (its ``auto_map``), for loading with ``trust_remote_code=True``
REMOTE_CODE = "modeling_free_atm_contrastive"

AutoConfig.register(InstanceContrastiveConfig.model_type, InstanceContrastiveConfig)
AutoModel.register(InstanceContrastiveConfig, InstanceContrastiveModel)
