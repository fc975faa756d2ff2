"""``ContrastiveTrainer``: makes the two views on the training device and logs the contrastive
sub-metrics."""

from __future__ import annotations

from dataclasses import asdict

from ..trainer import FreeATMTrainer
from ..views import MaskConsistentViews


class ContrastiveTrainer(FreeATMTrainer):
    """Takes the collator's batches, builds two mask-consistent views with ``views`` and returns the
    model's NT-Xent loss; ``valid_objects`` and ``positive_top1`` are averaged into each log."""

    def __init__(self, *args, views: MaskConsistentViews, **kwargs):
        super().__init__(*args, **kwargs)
        self.views = views

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        views = self.views(inputs["pixel_values"], inputs["object_maps"], inputs["object_valid"])
        outputs = model(**asdict(views))
        if model.training:
            self.accumulate(valid_objects=outputs.valid_objects, positive_top1=outputs.positive_top1)
        return (outputs.loss, outputs) if return_outputs else outputs.loss
