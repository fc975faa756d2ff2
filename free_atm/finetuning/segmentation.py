"""Fine-tuning a pretrained backbone for semantic segmentation, scored by mean IoU on held-out scenes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, TrainingArguments

from ..training.trainer import FreeATMTrainer
from .data import SEGMENTATION_CLASSES
from .models import segmentation_model


@dataclass
class SegmentationResult:
    """``mean_iou`` over the classes that occur (in the labels or the predictions) of the test set;
    ``class_iou`` per class name (``None`` where a class never occurs); the fine-tuned ``model``; the
    logged training ``losses`` in step order."""

    mean_iou: float
    class_iou: dict[str, float | None]
    model: PreTrainedModel
    losses: list[float]


def mean_iou(confusion: torch.Tensor) -> tuple[float, list[float | None]]:
    """Mean and per-class IoU from a ``(K, K)`` confusion matrix (rows: truth, columns: prediction), each
    class's intersection over union of its pixels over the whole set; a class with no pixel on either side
    is ``None`` and left out of the mean."""
    confusion = confusion.double()
    hits = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - hits
    scores = [float(h / u) if u > 0 else None for h, u in zip(hits, union)]
    present = [s for s in scores if s is not None]
    return sum(present) / len(present), scores


@torch.no_grad()
def confusion_matrix(model: PreTrainedModel, data: Dataset, num_labels: int, batch_size: int = 32) -> torch.Tensor:
    """Pixels counted by (true class, predicted class) over ``data`` (``pixel_values`` and ``labels``)."""
    model.eval()
    counts = torch.zeros(num_labels * num_labels, dtype=torch.long)
    for batch in DataLoader(data, batch_size=batch_size):
        logits = model(pixel_values=batch["pixel_values"].to(model.device)).logits
        predicted, truth = logits.argmax(1).cpu().flatten(), batch["labels"].flatten()
        kept = (truth >= 0) & (truth < num_labels)
        counts += torch.bincount(truth[kept] * num_labels + predicted[kept], minlength=num_labels * num_labels)
    return counts.view(num_labels, num_labels)


def finetune_segmentation(
    backbone: str | Path,
    train: Dataset,
    test: Dataset,
    training_args: TrainingArguments,
    head_channels: int = 64,
    class_names: Sequence[str] = SEGMENTATION_CLASSES,
    resume_from_checkpoint: str | None = None,
) -> SegmentationResult:
    """Fine-tune ``backbone`` (see :func:`segmentation_model`) with a fresh UperNet head on ``train``, the
    whole network trained as the paper's transfer tasks do, and score it on ``test``; the head is
    initialised from ``training_args.seed``; a diverging run stops in one line (``FreeATMTrainer``)."""
    torch.manual_seed(training_args.seed)
    model = segmentation_model(backbone, len(class_names), head_channels)
    trainer = FreeATMTrainer(model=model, args=training_args, train_dataset=train)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    confusion = confusion_matrix(model, test, len(class_names), training_args.per_device_eval_batch_size)
    overall, per_class = mean_iou(confusion)
    return SegmentationResult(overall, dict(zip(class_names, per_class)), model, losses)
