"""A soft attention map as a heat map over its image (a perceptual colour ramp, no plotting library)."""

from __future__ import annotations

import numpy as np
from PIL import Image

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
    """The map resized (bilinear) to ``size`` (width, height), coloured, blended ``alpha`` over ``image``."""
    resized = Image.fromarray(np.asarray(soft, dtype=np.float32), mode="F").resize(size, Image.BILINEAR)
    coloured = Image.fromarray(colourize(np.asarray(resized)))
    if image is None:
        return coloured
    return Image.blend(image.convert("RGB").resize(size), coloured, alpha)
