"""Before and after an adapter: a generator's raw ``annotate`` mean IoU on held-out masked images, the
figure a grounding adapter's card reports beside its losses."""

from __future__ import annotations

import numpy as np
import torch

from ...metrics.iou import mask_iou


@torch.no_grad()
def annotate_miou(pipe, batches, call: dict | None = None, seed: int = 0) -> float:
    """The mean IoU of the masks ``pipe.annotate`` cuts (its own capture and threshold settings, no
    refinement added) against the true masks, over every object whose mask is not empty.

    ``batches`` yields batches as :class:`~free_atm.training.grounding.recipe.GroundingCollator` makes them;
    image ``i`` of the whole run draws its noise from seed ``seed + i``, so that two pipelines compared on
    the same batches see the same noise."""
    scores, index = [], seed
    for batch in batches:
        images = (batch["pixel_values"] + 1) / 2
        generators = [torch.Generator().manual_seed(index + i) for i in range(len(images))]
        index += len(images)
        out = pipe.annotate(images, batch["prompts"], batch["objects"], generator=generators, **(call or {}))
        for masks, truths, objects in zip(out.masks, batch["masks"].numpy() > 0.5, batch["objects"]):
            scores += [mask_iou(masks[m], truths[m]) for m in range(len(objects)) if truths[m].any()]
    return float(np.mean(scores)) if scores else float("nan")
