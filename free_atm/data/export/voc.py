"""Pascal VOC segmentation: ``JPEGImages/``, ``SegmentationClass/`` and ``SegmentationObject/`` palette PNGs,
``ImageSets/Segmentation/train.txt`` and ``labelmap.txt``.

A class PNG holds each pixel's class index (1 for the first category, in ``labelmap.txt``'s order after
``background``), 0 where no object is and 255 (VOC's "void") where objects overlap; an object PNG holds
the object's number in its row (from 1) the same way. Both use VOC's colour palette.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .source import ExportRow

VOID = 255


def voc_palette() -> list[int]:
    """VOC's 256-colour palette (each index's bits spread over R, G and B), flattened for ``putpalette``."""
    palette = []
    for index in range(256):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette += [r, g, b]
    return palette


def label_image(masks: np.ndarray, labels: list[int]) -> np.ndarray:
    """uint8 ``(H, W)``: ``labels[m]`` where mask m alone covers a pixel, 0 where none does, :data:`VOID` where
    two or more do."""
    height, width = masks.shape[1:]
    covered = masks.sum(0) if len(masks) else np.zeros((height, width), int)
    out = np.zeros((height, width), np.uint8)
    for mask, label in zip(masks, labels):
        out[mask] = label
    out[covered > 1] = VOID
    return out


class VocWriter:
    """Writes one shard's rows at a time into ``out``, then the image list and label map."""

    def __init__(self, out: Path, categories: list[str], label_map: dict[str, str]) -> None:
        self.out, self.categories, self.label_map = out, categories, label_map
        self.class_ids = {name: i + 1 for i, name in enumerate(categories)}
        self.palette = voc_palette()
        for folder in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
            (out / folder).mkdir(parents=True, exist_ok=True)

    def _save(self, values: np.ndarray, path: Path) -> None:
        image = Image.fromarray(values, mode="P")
        image.putpalette(self.palette)
        image.save(path)

    def write(self, rows: list[ExportRow], part: Path) -> None:
        names = []
        for row in rows:
            name = f"{row.image_id:08d}"
            row.image.save(self.out / "JPEGImages" / f"{name}.jpg", quality=95)
            classes = [self.class_ids[self.label_map.get(phrase, phrase)] for phrase in row.objects]
            self._save(label_image(row.masks, classes), self.out / "SegmentationClass" / f"{name}.png")
            numbers = list(range(1, len(row.objects) + 1))
            self._save(label_image(row.masks, numbers), self.out / "SegmentationObject" / f"{name}.png")
            names.append(name)
        part.write_text("".join(name + "\n" for name in names))

    def finish(self, parts: list[Path]) -> None:
        listed = "".join(part.read_text() for part in parts)
        (self.out / "ImageSets" / "Segmentation" / "train.txt").write_text(listed)
        colours = [self.palette[3 * i : 3 * i + 3] for i in range(len(self.categories) + 1)]
        names = ["background", *self.categories]
        (self.out / "labelmap.txt").write_text(
            "# label:color_rgb:parts:actions\n"
            + "".join(f"{name}:{','.join(map(str, rgb))}::\n" for name, rgb in zip(names, colours))
        )
