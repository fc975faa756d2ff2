"""COCO instances: ``annotations.json`` (images, categories, one annotation per object) and ``images/``.

Masks are RLE-encoded by pycocotools (``segmentation`` ``{"size": [h, w], "counts": str}``), or outlines
with ``polygons`` (:mod:`.polygons`); ``bbox`` is ``[x, y, width, height]`` of the mask in pixels,
``area`` its pixel count, ``iscrowd`` 0. An empty mask (an object the capture found nowhere) has no
instance and is left out. Each shard's entries are written to their own part file, and the JSON is
assembled from the parts at the end, so memory stays flat and a rerun resumes at the first missing part.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .polygons import mask_polygons
from .source import ExportRow

ANNOTATIONS = "annotations.json"


class CocoWriter:
    """Writes one shard's rows at a time into ``out``, then the instances JSON."""

    def __init__(
        self, out: Path, categories: list[str], label_map: dict[str, str], polygons: bool, tolerance: float
    ) -> None:
        self.out, self.label_map, self.polygons, self.tolerance = out, label_map, polygons, tolerance
        self.category_ids = {name: i + 1 for i, name in enumerate(categories)}
        self.categories = [{"id": i, "name": name, "supercategory": "object"} for name, i in self.category_ids.items()]
        (out / "images").mkdir(parents=True, exist_ok=True)

    def write(self, rows: list[ExportRow], part: Path) -> None:
        """Write the rows' images, and their entries to the part file ``part`` (atomically)."""
        from pycocotools import mask as rle

        images, annotations = [], []
        for row in rows:
            name = f"images/{row.image_id:08d}.png"
            row.image.save(self.out / name)
            images.append(
                {"id": row.image_id, "file_name": name, "width": row.image.width, "height": row.image.height}
            )
            for phrase, mask in zip(row.objects, row.masks):
                if not mask.any():
                    continue
                ys, xs = np.nonzero(mask)
                x0, y0 = int(xs.min()), int(ys.min())
                bbox = [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]
                if self.polygons:
                    segmentation = [
                        [round(float(v), 2) for v in p.ravel()] for p in mask_polygons(mask, self.tolerance)
                    ]
                else:
                    encoded = rle.encode(np.asfortranarray(mask.astype(np.uint8)))
                    segmentation = {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}
                annotations.append(
                    {
                        "image_id": row.image_id,
                        "category_id": self.category_ids[self.label_map.get(phrase, phrase)],
                        "segmentation": segmentation,
                        "area": int(mask.sum()),
                        "bbox": bbox,
                        "iscrowd": 0,
                        "phrase": phrase,
                    }
                )
        temporary = part.with_suffix(".tmp")
        temporary.write_text(json.dumps({"images": images, "annotations": annotations}))
        temporary.replace(part)

    def finish(self, parts: list[Path]) -> None:
        """Assemble ``annotations.json`` from the parts, one part in memory at a time."""
        temporary = self.out / f"{ANNOTATIONS}.tmp"
        with open(temporary, "w") as file:
            file.write('{"info": {"description": "exported by free-atm"}, "categories": ')
            file.write(json.dumps(self.categories))
            for key in ("images", "annotations"):
                file.write(f', "{key}": [')
                count = 0
                for part in parts:
                    for entry in json.loads(part.read_text())[key]:
                        if key == "annotations":  # numbered in dataset order, from 1 (COCO's readers skip id 0)
                            entry = {"id": count + 1, **entry}
                        file.write(("" if not count else ", ") + json.dumps(entry))
                        count += 1
                file.write("]")
            file.write("}\n")
        temporary.replace(self.out / ANNOTATIONS)
