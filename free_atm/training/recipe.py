"""``ContrastiveArguments`` and the model, data and ``ContrastiveTrainer`` they describe: shared by
``trainers/train_contrastive.py``, the benchmarks and the tests."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from transformers import ResNetConfig, TrainingArguments

from .collate import ObjectMapCollator
from .contrastive_model import InstanceContrastiveConfig, InstanceContrastiveModel
from .probes import shapes_probe_splits
from .rows import drop_bad_rows
from .sources import load_source, mix_sources
from .trainer import ContrastiveTrainer, ProbeCallback
from .views import MaskConsistentViews

logger = logging.getLogger(__name__)


@dataclass
class ContrastiveArguments:
    dataset_name: str = field(metadata={"help": "dataset folder, Hub id, or shapes:N"})
    method: str = field(default="simclr", metadata={"help": "simclr or moco (MoCo-v2)"})
    momentum: float = field(default=0.99, metadata={"help": "MoCo key-encoder momentum"})
    queue_size: int = field(default=4096, metadata={"help": "MoCo queue of object keys"})
    level: str = field(default="instance", metadata={"help": "instance (attentive pooling) or image (SimCLR)"})
    real_dataset_name: str | None = field(default=None, metadata={"help": "second source for the mix"})
    real_ratio: float = field(default=0.0, metadata={"help": "share of samples drawn from the second source"})
    image_size: int = 64
    max_objects: int = 3
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
    probe_scenes: int = field(default=0, metadata={"help": "rendered scenes for the kNN and linear probes (0: none)"})
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "drop rows whose image or maps do not decode (one pass first); else stop naming the row"},
    )

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

    def training_data(self) -> Dataset:
        sources = [load_source(name) for name in (self.dataset_name, self.real_dataset_name) if name]
        if self.skip_bad_rows:
            for k, (name, source) in enumerate(zip((self.dataset_name, self.real_dataset_name), sources)):
                sources[k], dropped = drop_bad_rows(source)
                logger.warning("skipping %d bad rows of %s (--skip_bad_rows)", dropped, name)
        return mix_sources(sources[0], sources[1] if len(sources) > 1 else None, self.real_ratio)


def contrastive_trainer(args: ContrastiveArguments, training_args: TrainingArguments) -> ContrastiveTrainer:
    """A ``ContrastiveTrainer`` for ``args``, its model freshly initialised from ``training_args.seed``,
    with a ``ProbeCallback`` when ``args.probe_scenes`` is set."""
    training_args.remove_unused_columns = False
    torch.manual_seed(training_args.seed)
    model = InstanceContrastiveModel(args.model_config())
    if training_args.world_size > 1 and args.method == "simclr" and training_args.device.type == "cuda":
        # SimCLR's global BatchNorm (MoCo shuffles BN instead); SyncBatchNorm has no CPU kernel
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    collator = ObjectMapCollator(args.image_size, args.max_objects)
    callbacks = []
    if args.probe_scenes:
        probe = shapes_probe_splits(args.probe_scenes)
        callbacks.append(ProbeCallback(probe["train"], probe["test"], collator))
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
