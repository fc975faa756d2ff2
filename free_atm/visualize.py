"""Pictures a person can check: images with mask overlays, boxes and object names, laid out in a grid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

PALETTE = np.array(
    [(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (70, 240, 240), (245, 130, 48)],
    dtype=np.float32,
)


def overlay_masks(
    image: Image.Image, masks: np.ndarray, boxes: np.ndarray, objects: Sequence[str], alpha: float = 0.45
) -> Image.Image:
    """``image`` with each mask tinted in its own colour, its box outlined and labelled with its phrase."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    for i, mask in enumerate(masks):
        colour = PALETTE[i % len(PALETTE)]
        pixels[mask] = (1 - alpha) * pixels[mask] + alpha * colour
    picture = Image.fromarray(pixels.round().astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for i, (box, name) in enumerate(zip(boxes, objects)):
        if np.isnan(box).any():
            continue
        colour = tuple(int(c) for c in PALETTE[i % len(PALETTE)])
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=colour)
        draw.text((box[0] + 1, box[1]), name, fill=colour)
    return picture


def image_grid(images: Sequence[Image.Image], columns: int = 4) -> Image.Image:
    """Images of one size laid out row by row."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    width, height = images[0].size
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (width * min(columns, len(images)), height * rows), "white")
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * width, (i // columns) * height))
    return grid


def dataset_grid(rows, columns: int = 4, scale: int = 1) -> Image.Image:
    """Overlays of dataset rows (``image``, ``masks``, ``boxes``, ``objects``), enlarged ``scale`` times."""
    pictures = []
    for row in rows:
        masks = np.stack([np.asarray(m) > 0 for m in row["masks"]]) if row["masks"] else np.zeros((0, 1, 1), bool)
        picture = overlay_masks(
            row["image"], masks, np.asarray(row["boxes"], np.float32).reshape(-1, 4), row["objects"]
        )
        pictures.append(picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST))
    return image_grid(pictures, columns)
