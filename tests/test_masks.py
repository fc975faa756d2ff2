"""Soft maps to masks and boxes, against computations written out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from free_atm.masks import (
    largest_component,
    maps_to_masks,
    mask_boxes,
    normalize_maps,
    otsu_threshold,
    threshold_maps,
)


def test_normalize_per_object_and_constant_maps():
    maps = torch.stack([torch.arange(16.0).view(4, 4) + 3, torch.full((4, 4), 2.0)])
    normalized = normalize_maps(maps)
    torch.testing.assert_close(normalized[0], torch.arange(16.0).view(4, 4) / 15)
    assert torch.count_nonzero(normalized[1]) == 0


def brute_force_otsu(values: np.ndarray) -> float:
    """The cut among the observed values that maximises between-class variance, searched exhaustively."""
    best, best_cut = -1.0, None
    for cut in np.unique(values)[1:]:
        low, high = values[values < cut], values[values >= cut]
        variance = low.size * high.size * (low.mean() - high.mean()) ** 2
        if variance > best:
            best, best_cut = variance, cut
    return best_cut


def test_otsu_splits_like_exhaustive_search():
    rng = np.random.default_rng(0)
    values = np.clip(np.concatenate([rng.normal(0.2, 0.05, 700), rng.normal(0.75, 0.08, 300)]), 0, 1)
    cut, exact = otsu_threshold(values), brute_force_otsu(values)
    # the same partition up to values falling inside the 1/256 histogram bin of the exact cut
    disagree = np.count_nonzero((values >= cut) != (values >= exact))
    assert disagree <= np.count_nonzero(np.abs(values - exact) < 1 / 256)
    assert 0.3 < cut < 0.6


def test_fixed_and_competition_thresholds():
    maps = torch.tensor([[[0.9, 0.5, 0.1, 0.45]], [[0.2, 0.6, 0.3, 0.41]]])  # 2 objects, 1 x 4 pixels
    assert threshold_maps(maps, "fixed", 0.4).tolist() == [[[True, True, False, True]], [[False, True, False, True]]]
    competition = threshold_maps(maps, "competition", 0.4)
    # per pixel: argmax over (background 0.4, object 1, object 2)
    assert competition.tolist() == [[[True, False, False, True]], [[False, True, False, False]]]
    assert not (competition[0] & competition[1]).any()
    with pytest.raises(ValueError, match="threshold method must be one of .* got 'mean'"):
        threshold_maps(maps, "mean")


def test_boxes_are_pixel_edges_and_nan_for_empty():
    masks = np.zeros((2, 10, 12), bool)
    masks[0, 2:5, 3:9] = True
    boxes = mask_boxes(masks)
    np.testing.assert_array_equal(boxes[0], [3, 2, 9, 5])
    assert np.isnan(boxes[1]).all() and boxes.dtype == np.float32


def test_largest_component_keeps_biggest_blob():
    mask = np.zeros((8, 8), bool)
    mask[0:2, 0:2] = True  # 4 pixels
    mask[4:8, 4:7] = True  # 12 pixels
    kept = largest_component(mask)
    assert kept.sum() == 12 and kept[4:8, 4:7].all()


def test_maps_to_masks_upsamples_to_image_size():
    maps = torch.zeros(1, 4, 4)
    maps[0, 1:3, 1:3] = 1.0
    soft, masks, boxes = maps_to_masks(maps, (16, 16), "fixed", 0.5)
    assert soft.shape == (1, 4, 4) and soft.max() == 1.0
    assert masks.shape == (1, 16, 16)
    # bilinear upsampling by 4 puts the 0.5 crossing midway between the centres of cells 0 and 1
    assert masks[0, 8, :].tolist() == [False] * 4 + [True] * 8 + [False] * 4
    np.testing.assert_array_equal(boxes[0], [4, 4, 12, 12])
