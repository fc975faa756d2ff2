"""Soft attention maps to normalised maps, binary (instance) masks and boxes."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from .attention.aggregator import resize_maps
from .attention.config import THRESHOLD_METHODS
from .pixel_refinement import refine_with_pixels

__all__ = ["mask_boxes", "largest_component", "maps_to_masks", "normalize_maps", "otsu_threshold", "threshold_maps"]


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map of ``(..., h, w)`` to [0, 1]; a constant map becomes zeros."""
    flat = maps.flatten(-2)
    low = flat.min(dim=-1, keepdim=True).values
    span = flat.max(dim=-1, keepdim=True).values - low
    normalized = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(flat.dtype).tiny), 0.0)
    return normalized.view_as(maps)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1]: the cut that maximises the between-class variance."""
    counts, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    centers = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    mass_low = np.cumsum(counts * centers)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = mass_low / weight_low
        mean_high = (mass_low[-1] - mass_low) / weight_high
        between = weight_low * weight_high * (mean_low - mean_high) ** 2
    between = np.nan_to_num(between[:-1], nan=-1.0)
    return float(edges[1:][np.argmax(between)]) if between.size and between.max() > 0 else 0.5


def threshold_maps(maps: torch.Tensor, method: str = "fixed", threshold: float = 0.4) -> torch.Tensor:
    """Binary masks ``(M, H, W)`` from normalised maps ``(M, H, W)``.

    ``fixed`` keeps pixels at or above ``threshold``; ``otsu`` picks a threshold per object;
    ``competition`` assigns each pixel to the strongest object, or to the background when no object
    reaches ``threshold``, so masks never overlap.
    """
    if method == "fixed":
        return maps >= threshold
    if method == "otsu":
        cuts = [otsu_threshold(m.flatten().cpu().numpy()) for m in maps]
        return maps >= torch.tensor(cuts, dtype=maps.dtype, device=maps.device).view(-1, 1, 1)
    if method == "competition":
        background = torch.full_like(maps[:1], threshold)
        winner = torch.cat([background, maps]).argmax(dim=0)
        return winner.unsqueeze(0) == torch.arange(1, maps.shape[0] + 1, device=maps.device).view(-1, 1, 1)
    raise ValueError(f"threshold method must be one of {THRESHOLD_METHODS}, got {method!r}")


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2-D boolean mask (the mask itself when empty)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (np.argmax(sizes) + 1)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Boxes ``(M, 4)`` as xyxy pixel edges (``x1``, ``y1`` exclusive); a NaN row for an empty mask."""
    boxes = np.full((masks.shape[0], 4), np.nan, dtype=np.float32)
    for i, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size:
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def batched_mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """:func:`mask_boxes` for a batch ``(..., H, W)`` on its device, without a loop or a host sync:
    boxes ``(..., 4)`` in float32, a NaN row for an empty mask."""
    height, width = masks.shape[-2:]
    columns, rows = masks.any(-2), masks.any(-1)  # (..., W), (..., H)
    x0, y0 = columns.int().argmax(-1), rows.int().argmax(-1)
    x1, y1 = width - columns.flip(-1).int().argmax(-1), height - rows.flip(-1).int().argmax(-1)
    boxes = torch.stack([x0, y0, x1, y1], -1).float()
    return boxes.masked_fill(~columns.any(-1, keepdim=True), float("nan"))


def maps_to_masks(
    maps: torch.Tensor,
    image_size: tuple[int, int],
    method: str = "fixed",
    threshold: float = 0.4,
    keep_largest_component: bool = False,
    image: torch.Tensor | None = None,
    pixel_refinement: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From aggregated maps ``(M, h, w)`` of one image: normalised maps, masks ``(M, H, W)``, boxes ``(M, 4)``.

    With ``pixel_refinement`` iterations, the upsampled maps follow the edges of ``image`` ``(3, H, W)`` in
    [0, 1] (:func:`~free_atm.pixel_refinement.refine_with_pixels`) before they are thresholded.
    """
    normalized = normalize_maps(maps.float())
    upsampled = normalize_maps(resize_maps(normalized.unsqueeze(0), image_size)[0])
    if pixel_refinement:
        if image is None:
            raise ValueError(f"pixel_refinement={pixel_refinement} needs the image the maps belong to")
        upsampled = normalize_maps(refine_with_pixels(upsampled, image, pixel_refinement))
    masks = threshold_maps(upsampled, method, threshold).cpu().numpy()
    if keep_largest_component:
        masks = np.stack([largest_component(m) for m in masks]) if len(masks) else masks
    return normalized.cpu().numpy(), masks, mask_boxes(masks)
