"""``PositionPromptTrainer``: BLIP pretraining whose captions say where each object is (Free-ATM 3.3.3)."""

from __future__ import annotations

import torch
from transformers import BlipImageProcessor

from ..trainer import FreeATMTrainer
from ..views import MaskConsistentViews
from .prompts import check_prompt_mode, object_blocks, prompted_caption


class PositionPromptTrainer(FreeATMTrainer):
    """Takes the collator's batches (``pixel_values`` in [0, 1], ``object_maps``, ``object_valid``,
    ``captions``, ``object_names``), makes one mask-consistent view per image, appends the position
    prompts of the objects where the view's masks put them (``prompts``: all, one or none), tokenises with
    ``processing_class`` (the tokenizer), normalises the images as ``image_processor`` does (the one saved
    with the model) and returns ``BlipForPretraining``'s loss. The views must not change colours:
    the captions name them. ``loss_itc``, ``loss_itm``, ``loss_lm``, ``itm_accuracy`` and
    ``caption_tokens`` are averaged into each log.

    Building the captions reads the blocks on the host: one synchronisation per step, the price of text
    that depends on the augmentation."""

    def __init__(
        self,
        *args,
        views: MaskConsistentViews,
        prompts: str = "all",
        grid: int = 3,
        image_processor: BlipImageProcessor | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        check_prompt_mode(prompts)
        self.views, self.prompts, self.grid, self.image_processor = views, prompts, grid, image_processor
        normalise = image_processor is not None and image_processor.do_normalize
        self.image_mean = torch.tensor(image_processor.image_mean if normalise else (0.0,) * 3).view(1, -1, 1, 1)
        self.image_std = torch.tensor(image_processor.image_std if normalise else (1.0,) * 3).view(1, -1, 1, 1)

    def captions(self, view, inputs) -> list[str]:
        """Each caption with the prompts of its objects, placed by the view's masks."""
        if self.prompts == "none":
            return list(inputs["captions"])
        blocks = object_blocks(view.object_maps, view.object_valid, self.grid).tolist()
        return [
            prompted_caption(caption, names, row[: len(names)], self.prompts)
            for caption, names, row in zip(inputs["captions"], inputs["object_names"], blocks)
        ]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        view = self.views.single(inputs["pixel_values"], inputs["object_maps"], inputs["object_valid"])
        text = self.processing_class(
            self.captions(view, inputs), padding="longest", truncation=True, return_tensors="pt"
        )
        device = view.pixel_values.device
        pixels = (view.pixel_values - self.image_mean.to(device)) / self.image_std.to(device)
        # BLIP's momentum distillation weight grows linearly over the first epoch
        alpha = getattr(self.model.config, "itc_alpha", 0.0) * min(1.0, self.state.epoch or 0.0)
        outputs = model(
            pixel_values=pixels,
            input_ids=text.input_ids.to(device),
            attention_mask=text.attention_mask.to(device),
            itc_alpha=alpha if model.training else None,
        )
        if model.training:
            self.accumulate(
                loss_itc=outputs.loss_itc,
                loss_itm=outputs.loss_itm,
                loss_lm=outputs.loss_lm,
                itm_accuracy=outputs.itm_accuracy,
                caption_tokens=text.attention_mask.sum(1).float().mean(),
            )
        return (outputs.loss, outputs) if return_outputs else outputs.loss
