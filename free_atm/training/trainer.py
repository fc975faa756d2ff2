"""``ContrastiveTrainer``: a ``transformers.Trainer`` that makes the two views on the training device and
logs the contrastive sub-metrics."""

from __future__ import annotations

from dataclasses import asdict

import torch
from transformers import Trainer, TrainerCallback

from .collate import ObjectMapCollator
from .probes import knn_accuracy, object_features
from .views import MaskConsistentViews


class ContrastiveTrainer(Trainer):
    """Takes the collator's batches, builds two mask-consistent views with ``views`` and returns the
    model's NT-Xent loss; ``valid_objects`` and ``positive_top1`` are averaged into each log."""

    def __init__(self, *args, views: MaskConsistentViews, **kwargs):
        super().__init__(*args, **kwargs)
        self.views = views
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        views = self.views(inputs["pixel_values"], inputs["object_maps"], inputs["object_valid"])
        outputs = model(**asdict(views))
        if model.training:
            for key in ("valid_objects", "positive_top1"):
                # kept on the device: reading a value each step would synchronise it
                self._sums[key] = self._sums.get(key, 0.0) + getattr(outputs, key).detach()
            self._count += 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self._count and "loss" in logs:
            logs.update({k: round(float(v) / self._count, 4) for k, v in self._sums.items()})
            self._sums, self._count = {}, 0
        super().log(logs, *args, **kwargs)


class KnnProbeCallback(TrainerCallback):
    """Object-level kNN accuracy of the backbone on a labelled dataset, at every evaluation and at the end."""

    def __init__(self, train_dataset, test_dataset, collator: ObjectMapCollator, k: int = 20):
        self.train_dataset, self.test_dataset, self.collator, self.k = train_dataset, test_dataset, collator, k
        self.history: list[tuple[int, float]] = []

    def probe(self, backbone) -> float:
        bank = object_features(backbone, self.train_dataset, self.collator)
        queries = object_features(backbone, self.test_dataset, self.collator)
        return knn_accuracy(*bank, *queries, k=self.k)

    def _run(self, state, model):
        accuracy = self.probe(model.backbone)
        model.train()
        self.history.append((state.global_step, accuracy))
        state.log_history.append({"step": state.global_step, "knn_accuracy": accuracy})

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self._run(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            self._run(state, model)
