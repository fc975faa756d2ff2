"""``ContrastiveArguments`` and the model, data and ``ContrastiveTrainer`` they describe: shared by
``trainers/train_contrastive.py``, the benchmarks and the tests."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import ResNetConfig, TrainingArguments

from ..arguments import DataArguments
from ..callbacks import Probe, ProbeCallback
from ..collate import ObjectMapCollator
from ..probes import shapes_probe_splits
from ..views import MaskConsistentViews
from .model import InstanceContrastiveConfig, InstanceContrastiveModel
from .trainer import ContrastiveTrainer


@dataclass
class ContrastiveArguments(DataArguments):
    """The data (:class:`DataArguments`), then the method, augmentation and model."""

    method: str = field(default="simclr", metadata={"help": "simclr or moco (MoCo-v2)"})
    momentum: float = field(default=0.99, metadata={"help": "MoCo key-encoder momentum"})
    queue_size: int = field(default=4096, metadata={"help": "MoCo queue of object keys"})
    level: str = field(default="instance", metadata={"help": "instance (attentive pooling) or image (SimCLR)"})
    min_mass: float = field(default=0.2, metadata={"help": "least share of an object's map mass kept in a view"})
    color_strength: float = field(default=1.0, metadata={"help": "SimCLR's colour-distortion strength s"})
    hue: float | None = field(default=None, metadata={"help": "hue jitter, up to 0.5 (default 0.2 s)"})
    grayscale: float = field(default=0.2, metadata={"help": "probability of a grayscale view"})
    backbone_depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2], metadata={"help": "ResNet stages"})
    backbone_widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    backbone_layer_type: str = field(default="basic", metadata={"help": "basic (ResNet-18/34) or bottleneck"})
    projection_dim: int = 128
    hidden_dim: int = 512
    logit_temperature: float = 0.2

    def __post_init__(self) -> None:
        """The data's checks, then settings that would otherwise fail inside the first step."""
        super().__post_init__()
        if len(self.backbone_depths) != len(self.backbone_widths):
            raise ValueError(
                f"--backbone_depths {self.backbone_depths} and --backbone_widths {self.backbone_widths} must name "
                "the same number of stages"
            )
        for name in ("backbone_depths", "backbone_widths"):
            if not getattr(self, name) or min(getattr(self, name)) <= 0:
                raise ValueError(f"--{name} must be positive integers, got {getattr(self, name)}")
        for name in ("projection_dim", "hidden_dim", "queue_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.backbone_layer_type not in ("basic", "bottleneck"):
            raise ValueError(f"--backbone_layer_type must be basic or bottleneck, got {self.backbone_layer_type!r}")

    def model_config(self) -> InstanceContrastiveConfig:
        backbone = ResNetConfig(
            embedding_size=self.backbone_widths[0],
            hidden_sizes=self.backbone_widths,
            depths=self.backbone_depths,
            layer_type=self.backbone_layer_type,
        )
        return InstanceContrastiveConfig(
            backbone,
            level=self.level,
            projection_dim=self.projection_dim,
            hidden_dim=self.hidden_dim,
            logit_temperature=self.logit_temperature,
            method=self.method,
            momentum=self.momentum,
            queue_size=self.queue_size,
        )


def contrastive_trainer(args: ContrastiveArguments, training_args: TrainingArguments) -> ContrastiveTrainer:
    """A ``ContrastiveTrainer`` for ``args``, its model freshly initialised from ``training_args.seed``,
    with a ``ProbeCallback`` when ``args.probe_scenes`` is set."""
    training_args.remove_unused_columns = False
    torch.manual_seed(training_args.seed)
    model = InstanceContrastiveModel(args.model_config())
    if training_args.world_size > 1 and args.method == "simclr" and training_args.device.type == "cuda":
        # SimCLR's global BatchNorm (MoCo shuffles BN instead); SyncBatchNorm has no CPU kernel
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    collator = ObjectMapCollator(args.image_size, args.max_objects, args.skip_bad_rows)
    callbacks = []
    if args.probe_scenes:
        probe = shapes_probe_splits(args.probe_scenes)
        callbacks.append(ProbeCallback([Probe(probe["train"], probe["test"])], collator))
    return ContrastiveTrainer(
        model=model,
        args=training_args,
        train_dataset=args.training_data(),
        data_collator=collator,
        views=MaskConsistentViews(
            args.image_size,
            min_mass=args.min_mass,
            color_strength=args.color_strength,
            hue=args.hue,
            grayscale=args.grayscale,
        ),
        callbacks=callbacks,
    )
