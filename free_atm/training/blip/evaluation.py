"""Held-out image-text retrieval where position matters: rendered shapes-world scenes in mirrored layouts.

Each scene is shown as drawn, mirrored left to right, top to bottom and both: the same objects under the
same plain caption in different places. Every image's caption is its plain caption followed by the
position prompts of all its objects, read from the true masks, so within a scene's group only the
prompts tell the images apart. A layout whose caption repeats one of its group (an object on the
mirror's axis) is left out, so that every caption describes exactly one image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...metrics.retrieval import retrieval_recalls
from ...seeds import derive_seed
from ...world.render import render_scene
from ..callbacks import MeasureCallback
from .prompts import object_blocks, prompted_caption
from .retrieval import retrieval_scores

#: the layouts of a scene: as drawn, mirrored left-right, top-bottom, both (the axes flipped of (H, W))
LAYOUTS = ((), (1,), (0,), (0, 1))


@dataclass
class RetrievalSet:
    """Images ``uint8 (H, W, 3)``, one caption each (``captions[i]`` describes ``images[i]``) and the
    scene each image was drawn from."""

    images: list[np.ndarray]
    captions: list[str]
    scenes: list[int]


def positional_retrieval_set(num_scenes: int, seed: int = 3, size: int = 64, grid: int = 3) -> RetrievalSet:
    """Up to four layouts of each of ``num_scenes`` scenes (:data:`LAYOUTS`), captioned with the position
    prompts of a ``grid`` x ``grid`` block numbering. Seed 3 keeps the scenes apart from the training
    source ``shapes:N`` (seed 1) and the probes (seed 2)."""
    if num_scenes <= 0:
        raise ValueError(f"the retrieval set needs a positive number of scenes, got {num_scenes}")
    images, captions, scenes = [], [], []
    for index in range(num_scenes):
        scene = render_scene(derive_seed(seed, index), size=size)
        seen = set()
        for axes in LAYOUTS:
            masks = np.flip(scene.masks, tuple(a + 1 for a in axes)) if axes else scene.masks
            maps = torch.from_numpy(masks.astype(np.float32))[None]
            blocks = object_blocks(maps, torch.ones(1, len(masks)), grid)[0].tolist()
            caption = prompted_caption(scene.caption, scene.objects, blocks, "all")
            if caption in seen:
                continue
            seen.add(caption)
            images.append(np.ascontiguousarray(np.flip(scene.image, axes) if axes else scene.image))
            captions.append(caption)
            scenes.append(index)
    return RetrievalSet(images, captions, scenes)


@torch.no_grad()
def evaluate_retrieval(model, processor, retrieval_set: RetrievalSet, k: int = 16) -> dict[str, float]:
    """Recall at 1, 5 and 10 in both directions (percent, :func:`retrieval_recalls`) of ``model`` (a
    ``BlipForPretraining`` or transformers' ``BlipForImageTextRetrieval``) on ``retrieval_set`` by BLIP's
    protocol (ITC, then ITM re-ranking of the top ``k``); ``processor`` is the model's ``BlipProcessor``."""
    device = next(model.parameters()).device
    text = {"text": retrieval_set.captions, "padding": "longest", "truncation": True}
    inputs = processor(images=retrieval_set.images, **text, return_tensors="pt").to(device)
    was_training = model.training
    image_to_text, text_to_image = retrieval_scores(
        model, inputs.pixel_values, inputs.input_ids, inputs.attention_mask, k
    )
    model.train(was_training)
    text_image = np.arange(len(retrieval_set.captions))
    return retrieval_recalls(image_to_text.cpu().numpy(), text_image, text_to_image_scores=text_to_image.cpu().numpy())


class RetrievalCallback(MeasureCallback):
    """Retrieval recalls of the model being trained on ``retrieval_set``, named ``retrieval_...``
    (``retrieval_txt_r1``: image to text, ``retrieval_img_r1``: text to image)."""

    def __init__(self, retrieval_set: RetrievalSet, processor, k: int = 16):
        super().__init__()
        self.retrieval_set, self.processor, self.k = retrieval_set, processor, k

    def measure(self, model) -> dict[str, float]:
        recalls = evaluate_retrieval(model, self.processor, self.retrieval_set, self.k)
        return {f"retrieval_{name}": value for name, value in recalls.items()}
