"""A soft attention map as a heat map over its image (a perceptual colour ramp, no plotting library), with
its colour scale drawn in the picture's corner."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: anchors of a dark-to-bright ramp (black, purple, red, orange, pale yellow), evenly spaced in [0, 1]
RAMP = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], dtype=np.float32)


def colourize(soft: np.ndarray) -> np.ndarray:
    """``(h, w)`` values in [0, 1] to ``(h, w, 3)`` uint8 colours along :data:`RAMP` (linear between anchors)."""
    position = np.clip(soft, 0.0, 1.0) * (len(RAMP) - 1)
    low = np.minimum(position.astype(int), len(RAMP) - 2)
    weight = (position - low)[..., None]
    return np.rint((1 - weight) * RAMP[low] + weight * RAMP[low + 1]).astype(np.uint8)


def heatmap(
    soft: np.ndarray, size: tuple[int, int], image: Image.Image | None = None, alpha: float = 0.6
) -> Image.Image:
    """The map resized (bilinear) to ``size`` (width, height), coloured, blended ``alpha`` over ``image``,
    with the colour scale (0 at the bottom, 1 at the top: the map's own maximum) at the right edge."""
    resized = Image.fromarray(np.asarray(soft, dtype=np.float32), mode="F").resize(size, Image.BILINEAR)
    coloured = Image.fromarray(colourize(np.asarray(resized)))
    picture = coloured if image is None else Image.blend(image.convert("RGB").resize(size), coloured, alpha)
    return with_colour_scale(picture)


def with_colour_scale(picture: Image.Image) -> Image.Image:
    """``picture`` with a vertical bar of :data:`RAMP` in its right edge, labelled 0 (bottom) and 1 (top)."""
    width, height = picture.size
    bar_width, bar_height = max(4, width // 32), max(8, height // 3)
    font = ImageFont.load_default(size=max(8, height // 24))
    label = int(font.getbbox("0")[2]) + 4
    left, top = width - bar_width - label - 2, height - bar_height - 4
    ramp = colourize(np.linspace(1.0, 0.0, bar_height)[:, None].repeat(bar_width, axis=1))
    picture = picture.copy()
    draw = ImageDraw.Draw(picture)
    draw.rectangle([left - 1, top - 1, width - 1, top + bar_height], fill=(0, 0, 0))
    picture.paste(Image.fromarray(ramp), (left, top))
    draw.text((left + bar_width + 2, top - 2), "1", fill=(255, 255, 255), font=font)
    draw.text((left + bar_width + 2, top + bar_height - font.size), "0", fill=(255, 255, 255), font=font)
    return picture
