"""The arguments of attention-guided MAE and the model, data and ``GuidedMAETrainer`` they describe:
shared by ``trainers/train_mae.py``, the benchmarks and the tests (in the idioms of transformers'
``examples/pytorch/image-pretraining/run_mae.py``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from transformers import ViTImageProcessor, ViTMAEConfig, ViTMAEForPreTraining

from ...paths import local_path
from ...usage import names_a_folder
from ..arguments import DataArguments, FreeATMTrainingArguments
from ..callbacks import Probe, ProbeCallback
from ..collate import ObjectMapCollator
from ..probes import shapes_probe_splits
from ..views import MaskConsistentViews
from .encoder import vit_encoder
from .masking import SCHEDULES
from .trainer import GuidedMAETrainer


@dataclass
class MAEModelArguments:
    """The ViT to pretrain and how it is masked."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "a ViTMAEForPreTraining folder or Hub id to start from (default: a new ViT)"}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "settings of the new ViT, e.g. hidden_size=384,num_hidden_layers=12"},
    )
    patch_size: int = field(default=8, metadata={"help": "patch size of a new ViT"})
    mask_ratio: float = field(default=0.75, metadata={"help": "share of the patches masked"})
    norm_pix_loss: bool = field(
        default=True,
        metadata={
            "help": "targets: each patch normalised by its mean and std (MAE's default); on the flat-coloured shapes "
            "world a small ViT did not lower this loss in 600 steps where pixel targets did: turn it off there"
        },
    )
    guided_ratio_max: float = field(
        default=0.8, metadata={"help": "beta's ceiling: share of masked patches chosen by attention (0: random MAE)"}
    )
    guided_schedule: str = field(default="linear", metadata={"help": "linear (0 to the ceiling) or constant"})
    crop_scale: float = field(default=0.2, metadata={"help": "least area share of MAE's random resized crop"})

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"--mask_ratio must lie in (0, 1), got {self.mask_ratio}")
        if not 0.0 <= self.guided_ratio_max <= 1.0:
            raise ValueError(f"--guided_ratio_max must lie in [0, 1], got {self.guided_ratio_max}")
        if self.guided_schedule not in SCHEDULES:
            raise ValueError(f"--guided_schedule must be one of {', '.join(SCHEDULES)}, got {self.guided_schedule!r}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f"--crop_scale must lie in (0, 1], got {self.crop_scale}")
        if self.patch_size <= 0:
            raise ValueError(f"--patch_size must be positive, got {self.patch_size}")
        path = self.model_name_or_path
        if path and names_a_folder(path) and not (local_path(path) / "config.json").is_file():
            raise ValueError(f"--model_name_or_path {path} is not a model folder (no config.json)")

    def model_config(self, image_size: int) -> ViTMAEConfig:
        """A small ViT for ``image_size`` images (6 layers of width 192, a 2-layer decoder of width 128),
        updated by ``config_overrides``."""
        if image_size % self.patch_size:
            raise ValueError(f"--image_size {image_size} is not a multiple of --patch_size {self.patch_size}")
        config = ViTMAEConfig(
            image_size=image_size,
            patch_size=self.patch_size,
            hidden_size=192,
            num_hidden_layers=6,
            num_attention_heads=3,
            intermediate_size=768,
            decoder_hidden_size=128,
            decoder_num_hidden_layers=2,
            decoder_num_attention_heads=4,
            decoder_intermediate_size=512,
            mask_ratio=self.mask_ratio,
            norm_pix_loss=self.norm_pix_loss,
        )
        if self.config_overrides:
            try:
                config.update_from_string(self.config_overrides)
            except ValueError as error:
                raise ValueError(f"--config_overrides {self.config_overrides!r}: {error}") from None
        return config

    def model(self, image_size: int) -> ViTMAEForPreTraining:
        """The checkpoint of ``model_name_or_path`` (with this run's masking), or a new ViT."""
        if not self.model_name_or_path:
            return ViTMAEForPreTraining(self.model_config(image_size))
        model = ViTMAEForPreTraining.from_pretrained(
            self.model_name_or_path, mask_ratio=self.mask_ratio, norm_pix_loss=self.norm_pix_loss
        )
        if model.config.image_size != image_size:
            raise ValueError(
                f"--model_name_or_path {self.model_name_or_path} takes {model.config.image_size}-pixel images, "
                f"not --image_size {image_size}"
            )
        return model


@dataclass
class MAEDataArguments(DataArguments):
    """The training data (:class:`DataArguments`) and the share held out for the evaluation loss."""

    train_val_split: float = field(
        default=0.0, metadata={"help": "share of the data held out for the evaluation loss (0: none)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.train_val_split < 1.0:
            raise ValueError(f"--train_val_split must lie in [0, 1), got {self.train_val_split}")


@dataclass
class MAETrainingArguments(FreeATMTrainingArguments):
    base_learning_rate: float = field(
        default=1e-3, metadata={"help": "learning rate for a global batch of 256 (lr = base_lr x batch / 256)"}
    )

    def __post_init__(self) -> None:
        if not (math.isfinite(self.base_learning_rate) and self.base_learning_rate > 0):
            raise ValueError(f"--base_learning_rate must be a positive finite number, got {self.base_learning_rate}")
        super().__post_init__()


def image_processor(image_size: int) -> ViTImageProcessor:
    """What the encoder expects: ``image_size`` square images in [0, 1] (rescaled, not normalised), as the
    free-atm collator gives them."""
    return ViTImageProcessor(size={"height": image_size, "width": image_size}, do_normalize=False)


def mae_trainer(
    model_args: MAEModelArguments, data_args: MAEDataArguments, training_args: MAETrainingArguments
) -> GuidedMAETrainer:
    """A ``GuidedMAETrainer`` for these arguments: the learning rate scaled from ``base_learning_rate`` by
    the global batch, the model from ``training_args.seed``, one MAE view per image (crop and flip, no
    colour), probes (object level, CLS and mean-pooled patches) when ``probe_scenes`` is set."""
    training_args.remove_unused_columns = False
    args = training_args
    global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    training_args.learning_rate = training_args.base_learning_rate * global_batch / 256
    torch.manual_seed(training_args.seed)
    model = model_args.model(data_args.image_size)
    collator = ObjectMapCollator(data_args.image_size, data_args.max_objects, data_args.skip_bad_rows)
    data = data_args.training_data()
    evaluation = None
    if data_args.train_val_split:
        split = data.train_test_split(test_size=data_args.train_val_split, seed=training_args.seed)
        data, evaluation = split["train"], split["test"]
    callbacks = []
    if data_args.probe_scenes:
        scenes = shapes_probe_splits(data_args.probe_scenes)
        single = shapes_probe_splits(data_args.probe_scenes, max_objects=1)  # image-level labels
        probes = [Probe(scenes["train"], scenes["test"])]
        probes += [Probe(single["train"], single["test"], pooling, f"{pooling}_") for pooling in ("cls", "mean")]
        callbacks.append(ProbeCallback(probes, collator, backbone=vit_encoder))
    return GuidedMAETrainer(
        model=model,
        args=training_args,
        train_dataset=data,
        eval_dataset=evaluation,
        data_collator=collator,
        processing_class=image_processor(data_args.image_size),
        views=MaskConsistentViews(
            data_args.image_size, scale=(model_args.crop_scale, 1.0), color_strength=0.0, grayscale=0.0, blur=0.0
        ),
        guided_ratio_max=model_args.guided_ratio_max,
        guided_schedule=model_args.guided_schedule,
        callbacks=callbacks,
    )
