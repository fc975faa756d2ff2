"""``ContrastiveTrainer``: a ``transformers.Trainer`` that makes the two views on the training device and
logs the contrastive sub-metrics."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from .collate import ObjectMapCollator
from .probes import probe_backbone
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

    def create_model_card(self, *args, **kwargs) -> None:
        """Keeps a card already in ``output_dir`` (the one ``trainers/train_contrastive.py`` writes from
        ``hub_cards/``, which ``push_to_hub`` would otherwise overwrite); else the Trainer's own."""
        if not (Path(self.args.output_dir) / "README.md").is_file():
            super().create_model_card(*args, **kwargs)


class ProbeCallback(TrainerCallback):
    """Object-level kNN and linear-probe accuracy of the backbone on a labelled dataset, at every evaluation
    and at the end of training, on the main process only; each result goes into the log history."""

    def __init__(self, train_dataset, test_dataset, collator: ObjectMapCollator, k: int = 20):
        self.train_dataset, self.test_dataset, self.collator, self.k = train_dataset, test_dataset, collator, k
        self.history: list[dict] = []

    def _run(self, state, model):
        if not state.is_world_process_zero:  # every process holds the same weights
            return
        result = {
            "step": state.global_step,
            **probe_backbone(model.backbone, self.train_dataset, self.test_dataset, self.collator, self.k),
        }
        model.train()
        self.history.append(result)
        state.log_history.append(result)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self._run(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._run(state, model)
