"""Rendered scenes labelled per pixel by shape kind: the segmentation task of the reproduction."""

from __future__ import annotations

import numpy as np
from datasets import Array2D, Array3D, Dataset, Features

from ..seeds import derive_seed
from ..world.render import SHAPES, render_scene

#: class 0 is everything that is not a shape
SEGMENTATION_CLASSES = ("background", *SHAPES)


def shapes_segmentation_dataset(num_scenes: int, seed: int, size: int = 64, max_objects: int = 3) -> Dataset:
    """``num_scenes`` scenes ``derive_seed(seed, i)``: ``pixel_values`` float32 ``(3, size, size)`` in [0, 1]
    (as the free-atm collator gives pretraining images) and ``labels`` int64 ``(size, size)``, the index of
    the visible shape's kind in :data:`SEGMENTATION_CLASSES`. Torch-formatted."""
    if num_scenes <= 0:
        raise ValueError(f"num_scenes must be positive, got {num_scenes}")
    pixels = np.zeros((num_scenes, 3, size, size), np.float32)
    labels = np.zeros((num_scenes, size, size), np.int64)
    for i in range(num_scenes):
        scene = render_scene(derive_seed(seed, i), size=size, max_objects=max_objects)
        pixels[i] = scene.image.transpose(2, 0, 1) / 255.0
        for mask, kind in zip(scene.masks, scene.shapes):  # visible parts: the masks never overlap
            labels[i][mask] = SEGMENTATION_CLASSES.index(kind)
    features = Features(
        {"pixel_values": Array3D((3, size, size), "float32"), "labels": Array2D((size, size), "int64")}
    )
    return Dataset.from_dict({"pixel_values": pixels, "labels": labels}, features=features).with_format("torch")
