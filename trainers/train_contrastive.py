"""Instance-level (or image-level) contrastive pretraining on a free-atm dataset.

    accelerate launch --cpu --num_processes 1 trainers/train_contrastive.py \
        --dataset_name outputs/dataset --output_dir outputs/simclr --max_steps 500
    torchrun --nproc_per_node 2 trainers/train_contrastive.py ...

``--dataset_name`` is a dataset folder, a Hub id, or ``shapes:N`` (N rendered shapes-world scenes, whose
exact masks serve as the maps). ``--real_dataset_name`` with ``--real_ratio`` mixes a second source in
(the paper's "mix"). The output holds the whole model and ``backbone/`` for ``AutoModel.from_pretrained``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from datasets import Dataset
from huggingface_hub import ModelCard, ModelCardData
from transformers import HfArgumentParser, ResNetConfig, TrainingArguments

from free_atm.data.card import card_template
from free_atm.shapes import shapes_dataset
from free_atm.training import (
    ContrastiveTrainer,
    InstanceContrastiveConfig,
    InstanceContrastiveModel,
    KnnProbeCallback,
    MaskConsistentViews,
    ObjectMapCollator,
)
from free_atm.training.sources import load_source, mix_sources


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
    min_mass: float = 0.2
    backbone_depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2], metadata={"help": "ResNet stages"})
    backbone_widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    backbone_layer_type: str = field(default="basic", metadata={"help": "basic (ResNet-18/34) or bottleneck"})
    projection_dim: int = 128
    logit_temperature: float = 0.2
    probe_scenes: int = field(default=0, metadata={"help": "rendered scenes for a kNN probe (0: none)"})


def training_data(args: ContrastiveArguments) -> Dataset:
    secondary = load_source(args.real_dataset_name) if args.real_dataset_name else None
    return mix_sources(load_source(args.dataset_name), secondary, args.real_ratio)


def main() -> None:
    args, training_args = HfArgumentParser((ContrastiveArguments, TrainingArguments)).parse_args_into_dataclasses()
    training_args.remove_unused_columns = False
    backbone = ResNetConfig(
        embedding_size=args.backbone_widths[0],
        hidden_sizes=args.backbone_widths,
        depths=args.backbone_depths,
        layer_type=args.backbone_layer_type,
    )
    model = InstanceContrastiveModel(
        InstanceContrastiveConfig(
            backbone,
            level=args.level,
            projection_dim=args.projection_dim,
            logit_temperature=args.logit_temperature,
            method=args.method,
            momentum=args.momentum,
            queue_size=args.queue_size,
        )
    )
    if training_args.world_size > 1:  # BatchNorm statistics must not leak the batch into MoCo's keys
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    collator = ObjectMapCollator(args.image_size, args.max_objects)
    callbacks = []
    if args.probe_scenes:
        probe = shapes_dataset(args.probe_scenes, seed=2).train_test_split(test_size=0.5, seed=0)
        callbacks.append(KnnProbeCallback(probe["train"], probe["test"], collator))
    trainer = ContrastiveTrainer(
        model=model,
        args=training_args,
        train_dataset=training_data(args),
        data_collator=collator,
        views=MaskConsistentViews(args.image_size, min_mass=args.min_mass),
        callbacks=callbacks,
    )
    result = trainer.train()
    metrics = {"train_loss": round(result.training_loss, 4)}
    if callbacks:
        metrics["knn_accuracy (shapes world, object level)"] = round(callbacks[0].history[-1][1], 4)
    trainer.save_model()
    if trainer.is_world_process_zero():
        model.backbone.save_pretrained(f"{training_args.output_dir}/backbone")
        write_model_card(args, training_args, metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="free-atm contrastive pretraining")


def write_model_card(args: ContrastiveArguments, training_args: TrainingArguments, metrics: dict) -> None:
    name = {"simclr": "SimCLR", "moco": "MoCo-v2"}[args.method]
    descriptions = {
        "instance": f"instance-level {name}: features attentively pooled per object mask, positives are "
        "the same object in two crops",
        "image": f"image-level {name} (the baseline)",
    }
    datasets = [args.dataset_name] + (
        [f"{args.real_dataset_name} ({args.real_ratio:.0%})"] if args.real_dataset_name and args.real_ratio else []
    )
    card = ModelCard.from_template(
        ModelCardData(
            library_name="transformers",
            license="apache-2.0",
            tags=["free-atm", "self-supervised", "contrastive", args.method],
            pipeline_tag="image-feature-extraction",
        ),
        template_str=card_template("model_card.md.j2"),
        model_name=training_args.hub_model_id or training_args.output_dir.rstrip("/").split("/")[-1],
        method=args.method,
        level=args.level,
        method_description=descriptions[args.level],
        datasets=datasets,
        backbone=f"ResNet {args.backbone_layer_type}, depths {args.backbone_depths}, widths {args.backbone_widths}",
        steps=training_args.max_steps,
        batch_size=training_args.per_device_train_batch_size,
        metrics=metrics,
        repo_or_path=training_args.hub_model_id or training_args.output_dir,
    )
    card.save(f"{training_args.output_dir}/README.md")


if __name__ == "__main__":
    main()
