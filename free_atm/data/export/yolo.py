"""YOLO segmentation (Ultralytics): ``images/train/<id>.png``, ``labels/train/<id>.txt`` and ``data.yaml``.

Each object is one line ``class x1 y1 x2 y2 ...``: its class index (from 0) and its outline
(:mod:`.polygons`) in coordinates normalised by the image's width and height. An object in several
pieces is one line whose pieces are joined by zero-width slits (each piece's start is reached and left
along the same segment), so the line rasterises back to the union of the pieces. An empty mask has no
line. The training split is all rows; ``data.yaml`` names the same folder for validation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .polygons import mask_polygons
from .source import ExportRow


def joined_outline(polygons: list[np.ndarray]) -> np.ndarray:
    """One outline visiting every polygon: each is walked round back to its start, then the next begins;
    at the end the walk returns through every start to the first (zero-width slits)."""
    points = []
    for polygon in polygons:
        points += [*polygon, polygon[0]]
    points += [polygon[0] for polygon in reversed(polygons[:-1])]
    return np.array(points)


class YoloWriter:
    """Writes one shard's rows at a time into ``out``, then ``data.yaml``."""

    def __init__(self, out: Path, categories: list[str], label_map: dict[str, str], tolerance: float) -> None:
        self.out, self.categories, self.label_map, self.tolerance = out, categories, label_map, tolerance
        self.class_ids = {name: i for i, name in enumerate(categories)}
        for folder in ("images/train", "labels/train"):
            (out / folder).mkdir(parents=True, exist_ok=True)

    def write(self, rows: list[ExportRow], part: Path) -> None:
        for row in rows:
            row.image.save(self.out / "images" / "train" / f"{row.image_id:08d}.png")
            lines = []
            for phrase, mask in zip(row.objects, row.masks):
                polygons = mask_polygons(mask, self.tolerance)
                if not polygons:
                    continue
                outline = joined_outline(polygons) / (row.image.width, row.image.height)
                coordinates = " ".join(f"{v:.6f}" for v in outline.ravel())
                lines.append(f"{self.class_ids[self.label_map.get(phrase, phrase)]} {coordinates}")
            label = self.out / "labels" / "train" / f"{row.image_id:08d}.txt"
            label.write_text("".join(line + "\n" for line in lines))
        part.write_text(str(len(rows)))

    def finish(self, parts: list[Path]) -> None:
        names = "".join(f"  {i}: {name!r}\n" for i, name in enumerate(self.categories))
        text = f"path: {self.out.resolve()}\ntrain: images/train\nval: images/train\nnames:\n{names}"
        (self.out / "data.yaml").write_text(text)
