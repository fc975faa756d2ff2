"""One row of one table: pretrain (or not) as the row says, then measure downstream.

Every row of a framework shares its backbone, steps, batch and schedule; rows differ only in data
(``real``, ``synthetic``, their ``mix``) and in method: the framework's published form (image-level
contrastive learning, random MAE masking, plain captions) or Free-ATM's (objects attentively pooled by
their free masks, masking moved onto the attended patches, position prompts). ``random_init`` fine-tunes
an untrained backbone; ``supervised`` pretrains it as a multi-label classifier of the shape kinds on the
real scenes' labels (a transformers ``*ForImageClassification``).

Downstream, each backbone is fine-tuned whole for semantic segmentation (UperNet, mean IoU on held-out
scenes) and probed linearly per object; BLIP is measured by positional image-text retrieval.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import load_dataset
from transformers import (
    BlipProcessor,
    ResNetConfig,
    ResNetForImageClassification,
    ResNetModel,
    Trainer,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
    ViTMAEConfig,
    ViTModel,
)

from ...finetuning import finetune_segmentation, shapes_segmentation_dataset
from ...training import ContrastiveArguments, ObjectMapCollator, contrastive_trainer, probe_backbone
from ...training.blip.evaluation import evaluate_retrieval, positional_retrieval_set
from ...training.blip.recipe import BlipDataArguments, BlipModelArguments, blip_trainer
from ...training.mae.encoder import encoder_config, vit_encoder
from ...training.mae.recipe import MAEDataArguments, MAEModelArguments, MAETrainingArguments, mae_trainer
from ...training.probes import shapes_probe_splits
from ...training.rows import undecoded
from ...world.render import SHAPES
from .settings import ReproductionSettings

#: which data each row pretrains on, and whether it uses the free masks (Free-ATM's form)
ROW_DATA = {
    "real": ("real", False),
    "synthetic": ("synthetic", False),
    "synthetic_ours": ("synthetic", True),
    "mix_ours": ("mix", True),
}
MIX_RATIO = 0.5


@dataclass(frozen=True)
class Sources:
    """Dataset folders: ``real`` (rendered), ``synthetic`` (generated), ``annotated`` (real + free masks)."""

    real: str
    synthetic: str
    annotated: str

    def data_arguments(self, row: str) -> dict:
        """``dataset_name`` / ``real_dataset_name`` / ``real_ratio`` of a row of :data:`ROW_DATA`."""
        kind, _ = ROW_DATA[row]
        if kind == "mix":
            return {"dataset_name": self.synthetic, "real_dataset_name": self.annotated, "real_ratio": MIX_RATIO}
        return {"dataset_name": getattr(self, kind)}


def training_arguments(out: Path, steps: int, batch: int, seed: int, **extra) -> dict:
    return dict(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch, warmup_steps=max(1, steps // 10),
        logging_steps=max(1, steps // 10), report_to=[], save_strategy="no", dataloader_num_workers=0, seed=seed,
        disable_tqdm=True, use_cpu=not torch.cuda.is_available(), remove_unused_columns=False, **extra,
    )  # fmt: skip


def resnet_config(settings: ReproductionSettings) -> ResNetConfig:
    widths = list(settings.resnet_widths)
    return ResNetConfig(embedding_size=widths[0], hidden_sizes=widths, depths=list(settings.resnet_depths))


def vit_config(settings: ReproductionSettings) -> ViTConfig:
    """The ViT of the MAE rows, without MAE's decoder settings."""
    overrides = dict(item.split("=") for item in settings.vit.split(","))
    mae = ViTMAEConfig(image_size=settings.image_size, patch_size=8, **{k: int(v) for k, v in overrides.items()})
    return encoder_config(mae)


@dataclass
class MultiHotCollator:
    """The free-atm collator's images, and which shape kinds each image shows as ``labels (B, K)``."""

    collator: ObjectMapCollator

    def __call__(self, rows: list[dict]) -> dict:
        batch = self.collator(rows)
        labels = torch.zeros(len(rows), len(SHAPES))
        for i, kinds in enumerate(batch["object_labels"]):
            labels[i, kinds[kinds >= 0]] = 1.0
        return {"pixel_values": batch["pixel_values"], "labels": labels}


def supervised_backbone(architecture: str, settings: ReproductionSettings, sources: Sources, seed: int, out: Path):
    """The backbone of a multi-label shape-kind classifier trained on the real scenes' labels."""
    config = resnet_config(settings) if architecture == "resnet" else vit_config(settings)
    config.num_labels, config.problem_type = len(SHAPES), "multi_label_classification"
    torch.manual_seed(seed)
    classifier = ResNetForImageClassification if architecture == "resnet" else ViTForImageClassification
    model = classifier(config)
    data = undecoded(load_dataset(sources.real, split="train"), sources.real)  # with its kind labels
    args = training_arguments(out, settings.pretrain_steps, settings.batch_size, seed, learning_rate=1e-3)
    Trainer(
        model=model,
        args=TrainingArguments(**args),
        train_dataset=data,
        data_collator=MultiHotCollator(ObjectMapCollator(settings.image_size)),
    ).train()
    return model.resnet if architecture == "resnet" else model.vit


def random_backbone(architecture: str, settings: ReproductionSettings, seed: int):
    torch.manual_seed(seed)
    return ResNetModel(resnet_config(settings)) if architecture == "resnet" else ViTModel(vit_config(settings))


def contrastive_backbone(
    method: str, row: str, settings: ReproductionSettings, sources: Sources, seed: int, out: Path
):
    """SimCLR or MoCo-v2 pretraining: image level (published) or instance level on the free masks."""
    _, ours = ROW_DATA[row]
    args = ContrastiveArguments(
        **sources.data_arguments(row),
        method=method,
        level="instance" if ours else "image",
        hue=0.5,  # full hue turns and frequent grayscale: colour alone cannot solve the probes
        grayscale=0.5,
        backbone_depths=list(settings.resnet_depths),
        backbone_widths=list(settings.resnet_widths),
        projection_dim=64,
        hidden_dim=256,
        queue_size=1024,
    )
    args_ = training_arguments(out, settings.pretrain_steps, settings.batch_size, seed, learning_rate=3e-3)
    trainer = contrastive_trainer(args, TrainingArguments(**args_, weight_decay=1e-4))
    trainer.train()
    return trainer.model.backbone


def mae_backbone(row: str, settings: ReproductionSettings, sources: Sources, seed: int, out: Path):
    """MAE: random masking (published) or masking moved onto the attended patches (guided, up to 0.8)."""
    _, ours = ROW_DATA[row]
    model_args = MAEModelArguments(
        config_overrides=settings.vit, guided_ratio_max=0.8 if ours else 0.0, norm_pix_loss=False
    )
    data_args = MAEDataArguments(**sources.data_arguments(row), image_size=settings.image_size)
    args = training_arguments(out, settings.pretrain_steps, settings.batch_size, seed, weight_decay=0.05)
    trainer = mae_trainer(
        model_args, data_args, MAETrainingArguments(**args, base_learning_rate=6e-3, adam_beta2=0.95)
    )
    trainer.train()
    return vit_encoder(trainer.model)


def blip_retrieval(row: str, settings: ReproductionSettings, sources: Sources, seed: int, out: Path) -> dict:
    """BLIP pretraining with plain captions (published) or position prompts; R@1 both ways as fractions."""
    _, ours = ROW_DATA[row]
    model_args = BlipModelArguments(
        hidden_size=settings.blip_hidden_size, num_layers=settings.blip_layers, num_heads=4
    )
    data_args = BlipDataArguments(
        **sources.data_arguments(row), image_size=settings.image_size, position_prompts="all" if ours else "none"
    )
    args = training_arguments(out, settings.pretrain_steps, settings.batch_size, seed, learning_rate=3e-4)
    trainer = blip_trainer(model_args, data_args, TrainingArguments(**args, weight_decay=0.05))
    trainer.train()
    scenes = positional_retrieval_set(settings.retrieval_scenes, size=settings.image_size)
    recalls = evaluate_retrieval(
        trainer.model, BlipProcessor(trainer.image_processor, trainer.processing_class), scenes
    )
    return {"txt_r1": recalls["txt_r1"] / 100, "img_r1": recalls["img_r1"] / 100}


def downstream(backbone, settings: ReproductionSettings, seed: int, work: Path) -> dict:
    """Segmentation mean IoU after fine-tuning the whole backbone, and the object-level linear probe of the
    frozen backbone, both on held-out rendered scenes."""
    folder = work / "backbone"
    backbone.save_pretrained(folder)
    probe = shapes_probe_splits(settings.probe_scenes)
    accuracy = probe_backbone(backbone.eval(), probe["train"], probe["test"], ObjectMapCollator(settings.image_size))
    train = shapes_segmentation_dataset(settings.finetune_train_scenes, seed=10, size=settings.image_size)
    test = shapes_segmentation_dataset(settings.finetune_test_scenes, seed=11, size=settings.image_size)
    args = training_arguments(work / "segmentation", settings.finetune_steps, 16, seed, learning_rate=5e-4)
    result = finetune_segmentation(folder, train, test, TrainingArguments(**args))
    return {"seg_miou": result.mean_iou, "probe_accuracy": accuracy["linear_accuracy"]}


def run_row(framework: str, row: str, settings: ReproductionSettings, sources: Sources, seed: int) -> dict:
    """The metrics of ``row`` of ``framework`` (``simclr``, ``moco``, ``mae``, ``blip``) at ``seed``."""
    architecture = "vit" if framework == "mae" else "resnet"
    with tempfile.TemporaryDirectory(prefix=f"free-atm-{framework}-{row}-") as scratch:
        work = Path(scratch)
        if framework == "blip":
            return blip_retrieval(row, settings, sources, seed, work)
        if row == "random_init":
            backbone = random_backbone(architecture, settings, seed)
        elif row == "supervised":
            backbone = supervised_backbone(architecture, settings, sources, seed, work)
        elif framework == "mae":
            backbone = mae_backbone(row, settings, sources, seed, work)
        else:
            backbone = contrastive_backbone(framework, row, settings, sources, seed, work)
        return downstream(backbone, settings, seed, work)
