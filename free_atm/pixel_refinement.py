"""Pixel-adaptive refinement: soft masks pulled onto the edges of the image they describe.

Attention maps live on the latent grid (a cell is 8 pixels for Stable Diffusion, 4 for the shapes model),
so an upsampled map is blurred across every edge. Pixel-adaptive mask refinement (PAMR, Araslanov & Roth,
CVPR 2020) repeatedly replaces each pixel's value by a mean of its neighbours' values, weighted by how
alike their colours are, so a map spreads within a region of similar colour and stops at its edge.

Pitfall: it follows colour, not objects. An object of two colours, or two touching objects of one colour,
are not told apart by it; it sharpens a map that already finds the object, it does not find one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

#: neighbour rings (in pixels) each pixel averages over: 8 neighbours per ring, 32 in all
DILATIONS = (1, 2, 4, 8)
#: how sharply a colour difference lowers a neighbour's weight, relative to the local colour spread
TEMPERATURE = 0.1


def as_pixels(image) -> torch.Tensor:
    """One image as the ``(3, H, W)`` floats in [0, 1] that refinement reads: a ``(3, H, W)`` tensor in
    [0, 1] (``output_type="pt"``), an ``(H, W, 3)`` array in [0, 1] (``"np"``) or of uint8, or a PIL image."""
    if isinstance(image, torch.Tensor):
        return image.float()
    values = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    pixels = torch.from_numpy(values.astype(np.float32)).permute(2, 0, 1)
    return pixels / 255 if values.dtype == np.uint8 else pixels


def shifted(values: torch.Tensor, dilations: tuple[int, ...] = DILATIONS) -> Iterator[torch.Tensor]:
    """Views of ``(C, H, W)`` moved by each of the 8 offsets per dilation (ring by ring, row by row):
    the ``k``-th holds every pixel's ``k``-th neighbour; pixels beyond the border repeat the border."""
    height, width = values.shape[-2:]
    pad = max(dilations)
    padded = F.pad(values[None], (pad, pad, pad, pad), mode="replicate")[0]
    for d in dilations:
        for dy in (-d, 0, d):
            for dx in (-d, 0, d):
                if dy or dx:
                    yield padded[:, pad + dy : pad + dy + height, pad + dx : pad + dx + width]


def colour_affinity(image: torch.Tensor, dilations: tuple[int, ...] = DILATIONS) -> torch.Tensor:
    """Each pixel's weights ``(K, H, W)`` over its ``K`` neighbours (:func:`shifted`) in an image ``(3, H, W)``
    in [0, 1]: a softmax over the neighbours of ``-mean_c |I_c(i) - I_c(j)| / (TEMPERATURE * std_c(i))``,
    ``std_c(i)`` being the spread of channel ``c`` over pixel ``i``'s neighbours (so weights adapt to local
    contrast)."""
    around = torch.stack(list(shifted(image.float(), dilations)), dim=1)  # (3, K, H, W)
    spread = around.std(dim=1, keepdim=True)
    difference = (around - image.float()[:, None]).abs() / (TEMPERATURE * spread + 1e-8)
    return (-difference.mean(dim=0)).softmax(dim=0)


def refine_with_pixels(maps: torch.Tensor, image: torch.Tensor, iterations: int) -> torch.Tensor:
    """Maps ``(M, H, W)`` at the image's size, each pixel replaced ``iterations`` times by the
    colour-affinity-weighted mean of its neighbours (:func:`colour_affinity` of ``image`` ``(3, H, W)``
    in [0, 1])."""
    if maps.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"maps of size {tuple(maps.shape[-2:])} for an image of size {tuple(image.shape[-2:])}")
    if not len(maps) or not iterations:
        return maps
    affinity = colour_affinity(image.to(maps.device))
    refined = maps.float()
    for _ in range(iterations):  # one (M, H, W) sum at a time: no (M, K, H, W) tensor
        total = torch.zeros_like(refined)
        for weight, neighbour in zip(affinity, shifted(refined)):
            total.addcmul_(weight, neighbour)
        refined = total
    return refined
