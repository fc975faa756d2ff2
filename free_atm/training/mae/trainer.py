"""``GuidedMAETrainer``: ViTMAE pretraining whose masked patches move from random to the patches the
free attention maps mark as objects (Free-ATM section 3.3.2)."""

from __future__ import annotations

import torch

from ..trainer import FreeATMTrainer
from ..views import MaskConsistentViews, maps_at_image_size
from .masking import guided_noise, guided_ratio_at, patch_scores

#: a patch whose pooled attention score reaches this lies inside an object (for the logged share only)
INSIDE = 0.5


class GuidedMAETrainer(FreeATMTrainer):
    """Takes the collator's batches (``pixel_values`` in [0, 1], ``object_maps``, ``object_valid``), makes one
    mask-consistent view per image and masks it by :func:`guided_noise` with beta from the training
    progress (``guided_ratio_at(global_step / max_steps)``): the schedule lives here, not in the collator,
    whose worker processes never see it. Evaluation masks at random (beta 0) with a generator seeded
    afresh from ``args.seed`` at each evaluation, so evaluation losses compare across steps and runs.

    Each log carries ``guided_ratio`` (beta), ``masked_in_objects`` (the share of masked patches inside
    an object) and ``object_area`` (the share of all patches inside one: what random masking gives)."""

    def __init__(self, *args, views: MaskConsistentViews, guided_ratio_max: float, guided_schedule: str, **kwargs):
        super().__init__(*args, **kwargs)
        guided_ratio_at(0.0, guided_ratio_max, guided_schedule)  # a bad schedule fails before training
        self.views, self.guided_ratio_max, self.guided_schedule = views, guided_ratio_max, guided_schedule
        self._eval_generator: torch.Generator | None = None

    def guided_ratio(self) -> float:
        """beta at the current step."""
        progress = self.state.global_step / max(self.state.max_steps, 1)
        return guided_ratio_at(progress, self.guided_ratio_max, self.guided_schedule)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        config = self.model.config
        if model.training:
            view = self.views.single(inputs["pixel_values"], inputs["object_maps"], inputs["object_valid"])
            pixels, maps, valid = view.pixel_values, view.object_maps, view.object_valid
            beta, generator = self.guided_ratio(), None
        else:
            pixels, valid = inputs["pixel_values"], inputs["object_valid"]
            maps = maps_at_image_size(pixels, inputs["object_maps"])
            beta, generator = 0.0, self._eval_generator
        scores = patch_scores(maps, valid, config.patch_size)
        noise = guided_noise(scores, config.mask_ratio, beta, generator)
        outputs = model(pixel_values=pixels, noise=noise)
        if model.training:
            inside = (scores >= INSIDE).float()
            self.accumulate(
                masked_in_objects=(outputs.mask * inside).sum() / outputs.mask.sum(), object_area=inside.mean()
            )
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The evaluation loss only: the reconstructions are not gathered."""
        with torch.no_grad():
            loss = self.compute_loss(model, self._prepare_inputs(inputs))
        return loss.detach(), None, None

    def evaluate(self, *args, **kwargs):
        self._eval_generator = torch.Generator(self.args.device).manual_seed(self.args.seed)
        return super().evaluate(*args, **kwargs)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            logs["guided_ratio"] = round(self.guided_ratio(), 4)
        super().log(logs, *args, **kwargs)
