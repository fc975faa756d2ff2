"""How much a mask is worth: a confidence in [0, 1] per object, from its own attention map and the masks.

An object the model drew pulls its word's attention onto one region, and that region is its own; an
object the model left out gets a map spread over the picture, or one lying on another object's region.
The confidence multiplies the two:

* concentration ``c_i = max(0, (sum_k q_ik a_ik - A_i) / (1 - A_i))``, where ``q_i`` is the object's
  normalised map read as mass (``map / map.sum()``), ``a_ik`` the share of map cell ``k`` inside the mask
  and ``A_i`` the mask's area share (the mass a uniform map would put inside it): 0 for a map no more
  inside its mask than a uniform one, 1 for a map entirely inside it;
* exclusivity ``e_i = 1 - max_j IoU(mask_i, mask_j)`` over the image's other masks (1 for a lone object).

Pitfall: the mass is that of the normalised map quantised to 8 bits, as a dataset's ``attention_maps``
store it, not of the raw attention: the confidence of a stored row is recomputed exactly from the row, and
float rounding (another machine, another thread count) that leaves the stored map unchanged leaves the
confidence unchanged too. An empty mask, a mask covering the whole image, or a constant map all give 0.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["mask_confidence"]


def mask_confidence(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The confidence ``(M,)`` float32 in [0, 1] of each mask of one image: normalised maps ``(M, h, w)``
    in [0, 1] (read at 8 bits) and masks bool ``(M, H, W)`` (any sizes; each mask is averaged onto its
    map's cells)."""
    maps = np.rint(np.clip(np.asarray(maps, np.float64), 0.0, 1.0) * 255) / 255  # as a dataset stores them
    masks = np.asarray(masks, bool)
    if len(maps) != len(masks):
        raise ValueError(f"got {len(maps)} maps and {len(masks)} masks")
    if not len(masks):
        return np.zeros(0, np.float32)
    cover = F.adaptive_avg_pool2d(torch.from_numpy(masks).double(), maps.shape[-2:]).numpy()  # (M, h, w)
    area = cover.reshape(len(masks), -1).mean(1)
    total = maps.reshape(len(maps), -1).sum(1)
    inside = (maps * cover).reshape(len(maps), -1).sum(1) / np.where(total > 0, total, 1.0)
    concentration = np.where((total > 0) & (area < 1), (inside - area) / np.where(area < 1, 1 - area, 1.0), 0.0)
    flat = masks.reshape(len(masks), -1)
    overlap = flat.astype(np.float64) @ flat.T.astype(np.float64)  # exact counts below 2**53
    sizes = flat.sum(1)
    union = sizes[:, None] + sizes[None, :] - overlap
    iou = np.where(union > 0, overlap / np.where(union > 0, union, 1), 0.0)
    np.fill_diagonal(iou, 0.0)
    exclusivity = 1.0 - iou.max(1)
    return np.clip(concentration, 0.0, 1.0).astype(np.float32) * exclusivity.astype(np.float32)
