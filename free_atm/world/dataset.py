"""The shapes world as a ``datasets.Dataset``, in the schema of generated datasets plus labels."""

from __future__ import annotations

import numpy as np
from datasets import ClassLabel, Dataset, List
from PIL import Image

from ..data.schema import encode_sample, sample_features
from ..masks import mask_boxes
from ..seeds import derive_seed
from .render import COLOURS, SHAPES, render_scene


def shapes_features():
    """Generated-dataset features plus ``labels`` (shape kinds) and ``colours``, one per object."""
    return sample_features(labels=List(ClassLabel(names=list(SHAPES))), colours=List(ClassLabel(names=list(COLOURS))))


def shapes_dataset(num_scenes: int, seed: int = 0, size: int = 64, max_objects: int = 3) -> Dataset:
    """``num_scenes`` rendered scenes; ``attention_maps`` hold the exact masks (a perfect map).

    Deterministic: scene ``i`` depends only on ``(seed, i)``.
    """
    if num_scenes <= 0:
        raise ValueError(f"num_scenes must be positive, got {num_scenes}")

    def rows():
        for index in range(num_scenes):
            scene = render_scene(derive_seed(seed, index), size=size, max_objects=max_objects)
            yield encode_sample(
                Image.fromarray(scene.image),
                scene.caption,
                scene.objects,
                scene.masks,
                scene.masks.astype(np.float32),
                mask_boxes(scene.masks),
                np.ones(len(scene.masks), np.float32),  # exact masks
                scene.seed,
                labels=[SHAPES.index(s) for s in scene.shapes],
                colours=[list(COLOURS).index(c) for c in scene.colours],
            )

    return Dataset.from_list(list(rows()), features=shapes_features())
