"""The confidence of a mask (free_atm.confidence) against a hand computation, and the filter that keeps rows
or objects by it (free_atm.generation.confidence_filter)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from free_atm.confidence import mask_confidence
from free_atm.generation.confidence_filter import check_min_confidence, filter_sample


def hand_confidence(maps: np.ndarray, masks: np.ndarray) -> list[float]:
    """The formula of the module docstring, cell by cell and pair by pair, in float64, on the maps read at
    8 bits."""
    maps = np.round(np.asarray(maps, np.float64) * 255) / 255
    count, (h, w), (height, width) = len(maps), maps.shape[1:], masks.shape[1:]
    fy, fx = height // h, width // w
    result = []
    for i in range(count):
        total = float(maps[i].sum())
        inside, area = 0.0, 0.0
        for y in range(h):
            for x in range(w):
                share = float(masks[i, y * fy : (y + 1) * fy, x * fx : (x + 1) * fx].mean())
                inside += float(maps[i, y, x]) * share
                area += share / (h * w)
        concentration = max(0.0, (inside / total - area) / (1 - area)) if total > 0 and area < 1 else 0.0
        largest = 0.0
        for j in range(count):
            union = (masks[i] | masks[j]).sum()
            if j != i and union:
                largest = max(largest, (masks[i] & masks[j]).sum() / union)
        result.append(concentration * (1 - largest))
    return result


def test_confidence_equals_the_formula_computed_by_hand():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 4, 6))
    masks = rng.random((3, 8, 12)) > 0.6
    assert mask_confidence(maps, masks) == pytest.approx(hand_confidence(maps, masks), abs=1e-6)


def test_a_map_inside_its_own_mask_is_worth_one_and_a_spread_or_shared_one_less():
    maps = np.zeros((2, 4, 4))
    maps[0, :2, :2] = 1.0  # all its mass on its mask
    maps[1] = 0.5  # uniform: no more inside its mask than anywhere
    masks = np.zeros((2, 8, 8), bool)
    masks[0, :4, :4] = True
    masks[1, 4:, 4:] = True
    assert mask_confidence(maps, masks) == pytest.approx([1.0, 0.0])
    masks[1] = masks[0]  # a second object whose mask lies on the first: both are worth nothing
    maps[1] = maps[0]
    assert mask_confidence(maps, masks) == pytest.approx([0.0, 0.0])
    masks[1, :4, :2] = False  # half of the first mask: IoU 0.5 with it
    assert mask_confidence(maps, masks)[0] == pytest.approx(0.5)


def test_empty_and_whole_masks_and_constant_maps_are_worth_nothing():
    maps = np.stack([np.eye(4), np.eye(4), np.zeros((4, 4))])
    masks = np.zeros((3, 4, 4), bool)
    masks[1] = True
    masks[2, 0, 0] = True
    assert mask_confidence(maps, masks) == pytest.approx([0.0, 0.0, 0.0])
    assert mask_confidence(np.zeros((0, 4, 4)), np.zeros((0, 8, 8), bool)).shape == (0,)
    with pytest.raises(ValueError, match="got 2 maps and 1 masks"):
        mask_confidence(maps[:2], masks[:1])


def test_the_pipeline_returns_the_confidence_of_its_own_maps_and_masks(sd_pipe):
    out = sd_pipe(
        ["a cat and a dog", "a dog"],
        objects=[["cat", "dog"], ["dog"]],
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    )
    for maps, masks, confidence in zip(out.attention_maps, out.masks, out.confidence):
        assert confidence.dtype == np.float32 and confidence.shape == (len(masks),)
        assert confidence == pytest.approx(hand_confidence(maps.astype(np.float64), masks), abs=1e-6)


def _sample(confidence):
    count = len(confidence)
    return {
        "objects": [f"object {i}" for i in range(count)],
        "masks": np.arange(count)[:, None, None] == np.zeros((count, 2, 2)),
        "attention_maps": np.arange(count, dtype=np.float32)[:, None, None] * np.ones((count, 2, 2)),
        "boxes": np.arange(count * 4, dtype=np.float32).reshape(count, 4),
        "confidence": np.asarray(confidence, np.float32),
        "seed": 7,
    }


def test_rows_are_kept_whole_dropped_or_stripped_of_the_objects_below_the_minimum():
    sample = _sample([0.9, 0.3, 0.5])
    kept, dropped = filter_sample(sample, 0.3)  # at least the minimum is kept
    assert kept is sample and dropped == 0
    assert filter_sample(sample, 0.4) == (None, 1)
    kept, dropped = filter_sample(sample, 0.4, drop_objects=True)
    assert dropped == 1 and kept["objects"] == ["object 0", "object 2"] and kept["seed"] == 7
    assert kept["boxes"].tolist() == [[0, 1, 2, 3], [8, 9, 10, 11]]
    assert kept["attention_maps"][:, 0, 0].tolist() == [0, 2] and kept["confidence"].tolist() == pytest.approx(
        [0.9, 0.5]
    )
    assert filter_sample(sample, 0.95, drop_objects=True) == (None, 3)  # nothing left: the row goes
    nothing = _sample([])  # a row that names no object has no mask below any minimum
    kept, dropped = filter_sample(nothing, 1.0)
    assert kept is nothing and dropped == 0


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_a_minimum_outside_zero_to_one_is_refused(value):
    with pytest.raises(ValueError, match=f"--min-confidence must lie in \\[0, 1\\].*got {value}"):
        check_min_confidence(value)


def test_a_stored_row_gives_its_confidence_back_and_rounding_below_8_bits_moves_nothing():
    from free_atm.data.schema import map_image

    rng = np.random.default_rng(1)
    maps = rng.random((2, 4, 4))
    masks = rng.random((2, 8, 8)) > 0.5
    stored = np.stack([np.asarray(map_image(m), np.float64) / 255 for m in maps])
    assert np.array_equal(mask_confidence(stored, masks), mask_confidence(maps, masks))
    assert np.array_equal(mask_confidence(maps + 1e-7, masks), mask_confidence(maps, masks))
