"""The images ``annotate`` takes: PIL images of any mode or numpy arrays, as RGB, within the sizes a
denoiser can process.

Pitfall: the image processor rounds each side down to a multiple of the VAE's factor, so an image smaller
than that becomes an empty tensor deep in the VAE, and a huge one is only found when memory runs out
after minutes; both are named here, with the limits, before any model runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

#: the largest side of an image that is generated or annotated, in pixels
MAX_SIDE = 4096


def as_rgb_image(image: Image.Image | np.ndarray, index: int) -> Image.Image:
    """``image`` (a PIL image of any mode, or an ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` array of
    uint8, or of floats in [0, 1]) as an RGB PIL image; ``ValueError`` naming image ``index`` otherwise."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image {index} is a {type(image).__name__}; annotate takes PIL images or numpy arrays")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"image {index} is an array of shape {image.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.floating) or not np.isfinite(image).all():
            raise ValueError(f"image {index} is an array of {image.dtype}; expected uint8, or finite floats in [0, 1]")
        image = np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    return Image.fromarray(image.squeeze(2) if image.ndim == 3 and image.shape[2] == 1 else image).convert("RGB")


def annotation_images(images, min_side: int) -> list[Image.Image]:
    """``images`` (one image or a sequence) as RGB PIL images, each side in ``[min_side, MAX_SIDE]``;
    ``ValueError`` naming the first image outside them."""
    if isinstance(images, (Image.Image, np.ndarray)):
        images = [images]
    if not isinstance(images, Sequence):
        raise ValueError(f"images must be a PIL image, a numpy array or a list of them, got {type(images).__name__}")
    converted = [as_rgb_image(image, k) for k, image in enumerate(images)]
    for k, image in enumerate(converted):
        if not all(min_side <= side <= MAX_SIDE for side in image.size):
            raise ValueError(
                f"image {k} is {image.width} x {image.height} pixels; annotate takes sides of {min_side} to "
                f"{MAX_SIDE} pixels (resize it first)"
            )
    return converted
