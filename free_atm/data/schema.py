"""The dataset schema of DESIGN.md section 3, and the encoding of one sample into it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from datasets import Features, Image, List, Value
from PIL import Image as PILImage


def sample_features(**extra) -> Features:
    """Features of a free-atm dataset; ``extra`` adds columns (the shapes world adds its labels)."""
    return Features(
        {
            "image": Image(),
            "prompt": Value("string"),
            "objects": List(Value("string")),
            "masks": List(Image()),
            "attention_maps": List(Image()),
            "boxes": List(List(Value("float32"), length=4)),
            "confidence": List(Value("float32")),
            "seed": Value("int64"),
            **extra,
        }
    )


def _kind(feature) -> tuple:
    """A feature's structure and types, without settings such as ``decode``."""
    if isinstance(feature, List):
        return ("List", _kind(feature.feature), feature.length)
    return (type(feature).__name__, getattr(feature, "dtype", None))


def check_columns(
    features: Features, columns: Sequence[str], source: str, hint: str = "make one with `free-atm generate`"
) -> None:
    """Raise ``ValueError`` naming the columns of the free-atm schema that ``source`` lacks or holds with
    another feature type, followed by ``hint`` (how to make a dataset that has them)."""
    schema = sample_features()
    missing = [c for c in columns if c not in features]
    if missing:
        raise ValueError(f"dataset {source} lacks the free-atm columns {missing} (it has {sorted(features)}); {hint}")
    for column in columns:
        if _kind(features[column]) != _kind(schema[column]):
            raise ValueError(f"dataset {source} column {column!r} is {features[column]}, expected {schema[column]}")


#: the columns that hold one entry per object, in the order of ``objects``
PER_OBJECT = ("masks", "attention_maps", "boxes", "confidence")


def check_row(row: Mapping, name: str) -> None:
    """Raise ``ValueError`` naming row ``name`` when its columns disagree: each column of
    :data:`PER_OBJECT` the row has holds one entry per object, its masks have its image's size, and its
    attention maps one size, of its image's shape (they may be smaller: the aggregation resolution).
    Images are checked where they are decoded (PIL). A row that disagrees would be drawn with a mask
    stretched over another image, or train an object on another object's map."""
    objects = row.get("objects")
    counts = {column: len(row[column]) for column in PER_OBJECT if row.get(column) is not None}
    if objects is not None and any(count != len(objects) for count in counts.values()):
        held = ", ".join(f"{count} {column}" for column, count in counts.items())
        raise ValueError(f"row {name}: {len(objects)} objects {list(objects)} but {held}")
    image = row.get("image")
    size = image.size if isinstance(image, PILImage.Image) else None
    masks = [m.size for m in row.get("masks") or [] if isinstance(m, PILImage.Image)]
    if size is not None and any(m != size for m in masks):
        raise ValueError(f"row {name}: masks of sizes {masks} for an image of size {size}")
    maps = [m.size for m in row.get("attention_maps") or [] if isinstance(m, PILImage.Image)]
    if len(set(maps)) > 1:
        raise ValueError(f"row {name}: attention maps of different sizes {maps}")
    if size is not None and maps and abs(maps[0][0] * size[1] - maps[0][1] * size[0]) >= max(size):
        raise ValueError(f"row {name}: attention maps of size {maps[0]} for an image of size {size} (another shape)")


def mask_image(mask: np.ndarray) -> PILImage.Image:
    """A binary mask as an 8-bit PNG-ready image (0/255)."""
    return PILImage.fromarray(mask.astype(np.uint8) * 255)


def map_image(soft: np.ndarray) -> PILImage.Image:
    """A soft map in [0, 1] quantised to 8 bits."""
    return PILImage.fromarray(np.clip(np.rint(soft * 255), 0, 255).astype(np.uint8))


def encode_sample(
    image: PILImage.Image,
    prompt: str,
    objects: Sequence[str],
    masks: np.ndarray,
    attention_maps: np.ndarray,
    boxes: np.ndarray,
    confidence: Sequence[float],
    seed: int,
    **extra,
) -> dict:
    """One row in the schema of :func:`sample_features`; ``confidence`` holds one value in [0, 1] per mask
    (:func:`free_atm.confidence.mask_confidence`)."""
    return {
        "image": image,
        "prompt": prompt,
        "objects": list(objects),
        "masks": [mask_image(m) for m in masks],
        "attention_maps": [map_image(m) for m in attention_maps],
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4).tolist(),
        "confidence": np.asarray(confidence, dtype=np.float32).reshape(-1).tolist(),
        "seed": int(seed),
        **extra,
    }
