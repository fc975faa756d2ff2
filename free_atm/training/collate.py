"""Batches of images and a fixed number M of object maps, from rows of a free-atm dataset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers import ViTImageProcessor

from .rows import decode_rows


def collator_image_processor(image_size: int) -> ViTImageProcessor:
    """What :class:`ObjectMapCollator` does to an image, as an image processor saved beside a backbone (so
    that ``AutoImageProcessor`` and ``pipeline("image-feature-extraction")`` feed it as it was trained):
    RGB, bilinear resize to ``image_size`` square, values in [0, 1], no normalisation."""
    return ViTImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=Image.BILINEAR,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=False,
    )


@dataclass
class ObjectMapCollator:
    """Rows (``image``, ``attention_maps`` and optionally ``labels``) to ``pixel_values (B, 3, S, S)`` in
    [0, 1], ``object_maps (B, M, S, S)`` in [0, 1], ``object_valid (B, M)`` and ``object_labels (B, M)``
    (-1 where absent). M is fixed so that batches gather across processes; extra objects are dropped.
    Rows with a caption (``prompt``) also give ``captions`` and ``object_names`` (per row, M at most),
    as lists of strings. With ``skip_bad_rows`` a row that does not decode is skipped where it is met (see
    :func:`~free_atm.training.rows.decode_rows`), else it stops training naming it."""

    image_size: int = 64
    max_objects: int = 3
    skip_bad_rows: bool = False

    def _array(self, picture: Image.Image, mode: str) -> np.ndarray:
        picture = picture.convert(mode)
        if picture.size != (self.image_size, self.image_size):
            picture = picture.resize((self.image_size, self.image_size), Image.BILINEAR)
        return np.asarray(picture, dtype=np.float32) / 255.0

    def __call__(self, rows: list[dict]) -> dict:
        rows = decode_rows(rows, self.skip_bad_rows)  # a broken row is named (BadRowError), not a PIL traceback
        size, slots = self.image_size, self.max_objects
        pixels = np.stack([self._array(r["image"], "RGB").transpose(2, 0, 1) for r in rows])
        maps = np.zeros((len(rows), slots, size, size), np.float32)
        valid = np.zeros((len(rows), slots), bool)
        labels = np.full((len(rows), slots), -1, np.int64)
        for i, row in enumerate(rows):
            for m, picture in enumerate(row["attention_maps"][:slots]):
                maps[i, m] = self._array(picture, "L")
                valid[i, m] = maps[i, m].sum() > 0
            if "labels" in row:
                row_labels = list(row["labels"])[:slots]
                labels[i, : len(row_labels)] = row_labels
        batch = {
            "pixel_values": torch.from_numpy(pixels),
            "object_maps": torch.from_numpy(maps),
            "object_valid": torch.from_numpy(valid),
            "object_labels": torch.from_numpy(labels),
        }
        if "prompt" in rows[0]:
            batch["captions"] = [row["prompt"] for row in rows]
            batch["object_names"] = [list(row["objects"])[:slots] for row in rows]
        return batch
