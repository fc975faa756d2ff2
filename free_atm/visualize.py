"""Pictures a person can check: images with coloured mask outlines, boxes, object names and the caption,
laid out in a grid. ``free-atm show`` and the ``sample_grid.png`` that ``generate`` writes both draw
with :func:`dataset_grid`."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import binary_erosion

PALETTE = np.array(
    [(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (70, 240, 240), (245, 130, 48)],
    dtype=np.float32,
)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _fit(image: Image.Image, cell: int) -> Image.Image:
    """``image`` scaled so that its longer side is ``cell``: nearest when enlarging (pixels stay
    pixels), bicubic when shrinking."""
    scale = cell / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.NEAREST if scale >= 1 else Image.BICUBIC)


def overlay_masks(
    image: Image.Image,
    masks: np.ndarray,
    boxes: np.ndarray,
    objects: Sequence[str],
    alpha: float = 0.25,
    outline: int = 2,
) -> Image.Image:
    """``image`` with each mask lightly tinted and outlined in its own colour (``outline`` pixels wide),
    its box drawn thin and labelled with its phrase. Masks and boxes are in ``image``'s pixels."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for i, mask in enumerate(masks):
        colour = PALETTE[i % len(PALETTE)]
        pixels[mask] = (1 - alpha) * pixels[mask] + alpha * colour
        pixels[mask & ~binary_erosion(mask, iterations=outline, border_value=0)] = colour
    picture = Image.fromarray(pixels.round().astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    font = _font(max(10, picture.height // 18))
    drawn = [(i, box, name) for i, (box, name) in enumerate(zip(boxes, objects)) if not np.isnan(box).any()]
    for i, box, _ in drawn:
        colour = tuple(int(c) for c in PALETTE[i % len(PALETTE)])
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=colour)
    places = label_places([box for _, box, _ in drawn], [name for *_, name in drawn], font, picture.size)
    for (i, _, name), (left, top, right, bottom) in zip(drawn, places):
        draw.rectangle([left, top, right, bottom], fill=(0, 0, 0))
        draw.text((left + 1, top + 1), name, fill=tuple(int(c) for c in PALETTE[i % len(PALETTE)]), font=font)
    return picture


def label_places(
    boxes: Sequence[np.ndarray], names: Sequence[str], font: ImageFont.ImageFont, size: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """A rectangle ``(left, top, right, bottom)`` for each box's name, inside a picture of ``size``: at the
    box's top-left corner, moved left or up to stay in the picture, then down (or up) past labels already
    placed so that no two overlap while room remains."""
    width, height = size
    placed: list[tuple[int, int, int, int]] = []
    for box, name in zip(boxes, names):
        left, top, right, bottom = font.getbbox(name)
        w, h = min(right - left + 2, width), bottom - top + 2
        x = int(min(max(0, box[0] + 1), width - w))
        y = int(min(max(0, box[1] + 1), height - h))
        for step in (h, -h):  # slide past earlier labels, downwards first, then upwards
            candidate = y
            while any(_overlap((x, candidate, x + w - 1, candidate + h - 1), p) for p in placed):
                candidate += step
            if 0 <= candidate <= height - h:
                y = candidate
                break
        placed.append((x, y, x + w - 1, y + h - 1))
    return placed


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def captioned(picture: Image.Image, caption: str, lines: int = 3) -> Image.Image:
    """``picture`` above a white band holding ``caption``, wrapped to the picture's width."""
    font = _font(max(10, picture.width // 20))
    height = font.size + 2
    wrapped = textwrap.wrap(caption, width=max(8, int(picture.width / (0.55 * font.size))))[:lines]
    out = Image.new("RGB", (picture.width, picture.height + lines * height + 4), "white")
    out.paste(picture, (0, 0))
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(wrapped):
        draw.text((2, picture.height + 2 + k * height), line, fill=(0, 0, 0), font=font)
    return out


def image_grid(images: Sequence[Image.Image], columns: int = 4, gap: int = 4) -> Image.Image:
    """Images laid out row by row in cells of the largest image's size, ``gap`` white pixels apart."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    width, height = max(i.width for i in images), max(i.height for i in images)
    rows, columns = -(-len(images) // columns), min(columns, len(images))
    grid = Image.new("RGB", (columns * (width + gap) - gap, rows * (height + gap) - gap), "white")
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * (width + gap), (i // columns) * (height + gap)))
    return grid


def confidence_labels(objects: Sequence[str], confidence: Sequence[float] | None) -> list[str]:
    """Each object's label: its phrase and, when known, its mask's confidence (``"red star 0.93"``)."""
    if confidence is None:
        return list(objects)
    return [f"{name} {value:.2f}" for name, value in zip(objects, confidence)]


def dataset_grid(rows, columns: int = 4, cell: int = 256) -> Image.Image:
    """Dataset rows (``image``, ``prompt``, ``masks``, ``boxes``, ``objects``, and ``confidence`` where the
    dataset has it) drawn in cells whose images are ``cell`` pixels on their longer side, each with its mask
    outlines, boxes, names, confidences and caption."""
    if cell < 64:
        raise ValueError(f"cell must be at least 64 pixels, got {cell}")
    pictures = []
    for row in rows:
        image = _fit(row["image"].convert("RGB"), cell)
        scale = image.width / row["image"].width
        masks = [np.asarray(m.resize(image.size, Image.NEAREST)) > 0 for m in row["masks"]]
        masks = np.stack(masks) if masks else np.zeros((0, image.height, image.width), bool)
        boxes = np.asarray(row["boxes"], np.float32).reshape(-1, 4) * scale
        labels = confidence_labels(row["objects"], row.get("confidence"))
        pictures.append(captioned(overlay_masks(image, masks, boxes, labels), row["prompt"]))
    return image_grid(pictures, columns)


def plot_layer_step_maps(
    maps: np.ndarray, out: str, timesteps: Sequence[float] | None = None, title: str | None = None
) -> None:
    """Draw one object's kept maps (``CaptureConfig(keep=...)``) with matplotlib (the ``plots`` extra): a
    row per step and a column per layer for ``(S, L, h, w)``, one row of layers for ``(L, h, w)``. Each
    map is scaled to its own range; ``timesteps`` label the rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.asarray(maps, dtype=np.float32)
    if grid.ndim == 3:
        grid = grid[None]
    if grid.ndim != 4 or not grid.size:
        raise ValueError(f"maps must be (S, L, h, w) or (L, h, w) and not empty, got shape {np.shape(maps)}")
    if timesteps is not None and len(timesteps) != grid.shape[0]:
        raise ValueError(f"got {len(timesteps)} timesteps for {grid.shape[0]} rows of maps")
    rows, columns = grid.shape[:2]
    figure, axes = plt.subplots(rows, columns, figsize=(1.2 * columns + 0.8, 1.2 * rows + 0.6), squeeze=False)
    for row in range(rows):
        for column in range(columns):
            axis = axes[row, column]
            axis.imshow(grid[row, column], cmap="magma")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == rows - 1:
                axis.set_xlabel(f"layer {column}", fontsize=7)
            if column == 0 and timesteps is not None:
                axis.set_ylabel(f"t = {timesteps[row]:.0f}", fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
