"""The mask IoU metric module against IoU computed by hand."""

from __future__ import annotations

import evaluate
import numpy as np
import pytest

from free_atm.metrics import box_iou, mask_iou, metric_path


def test_metric_module_loads_offline_and_scores_by_hand():
    metric = evaluate.load(metric_path("mask_iou"))
    prediction = np.zeros((2, 8, 8), bool)
    reference = np.zeros((2, 8, 8), bool)
    prediction[0, 0:4, 0:4] = True  # 16 px
    reference[0, 0:4, 2:6] = True  # 16 px, overlap 8 -> IoU 8 / 24
    prediction[1, 6:8, 6:8] = True
    reference[1, 0:2, 0:2] = True  # disjoint -> 0
    result = metric.compute(predictions=[prediction], references=[reference])
    assert result["per_object_iou"] == pytest.approx([8 / 24, 0.0])
    assert result["mean_iou"] == pytest.approx(8 / 48)
    # boxes equal the masks here (rectangles), so box IoU equals mask IoU
    assert result["per_object_box_iou"] == pytest.approx([8 / 24, 0.0])


def test_box_iou_of_non_rectangular_masks():
    prediction = np.zeros((1, 10, 10), bool)
    prediction[0, 0, 0] = prediction[0, 4, 4] = True  # box (0, 0, 5, 5): area 25, mask 2 px
    reference = np.zeros((1, 10, 10), bool)
    reference[0, 0:5, 0:5] = True
    metric = evaluate.load(metric_path("mask_iou"))
    result = metric.compute(predictions=[prediction], references=[reference])
    assert result["per_object_iou"] == pytest.approx([2 / 25])
    assert result["per_object_box_iou"] == pytest.approx([1.0])


def test_functions_and_errors():
    assert box_iou(np.array([0, 0, 2, 2.0]), np.array([1, 1, 3, 3.0])) == pytest.approx(1 / 7)
    assert box_iou(np.full(4, np.nan), np.array([0, 0, 1, 1.0])) == 0.0
    assert mask_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 0.0
    with pytest.raises(ValueError, match=r"mask shapes differ: prediction \(3, 3\), reference \(4, 4\)"):
        mask_iou(np.zeros((3, 3), bool), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="unknown metric 'dice'"):
        metric_path("dice")
