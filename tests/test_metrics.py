"""The mask IoU metric module against IoU computed by hand."""

from __future__ import annotations

import evaluate
import numpy as np
import pytest

from free_atm.metrics import box_iou, mask_iou, metric_path


def test_metric_module_loads_offline_and_scores_by_hand():
    metric = evaluate.load(metric_path("mask_iou"))
    assert metric.name == "mask_iou"
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


def test_retrieval_recall_module_against_hand_ranks():
    from free_atm.metrics import retrieval_recalls

    # 3 images, 4 texts: texts 0 and 1 describe image 0, text 2 image 1, text 3 image 2
    scores = np.array(
        [
            [0.1, 0.9, 0.5, 0.0],  # image 0: best text is 1 (its own) -> rank 0
            [0.8, 0.2, 0.3, 0.1],  # image 1: its text 2 ranks 1 (after text 0)
            [0.7, 0.6, 0.5, 0.4],  # image 2: its text 3 ranks 3 (last)
        ]
    )
    references = [[0, 1], [2], [3]]
    result = evaluate.load(metric_path("retrieval_recall")).compute(predictions=list(scores), references=references)
    # text to image, by column: text 0 -> image 1 first, its image 0 ranks 2; text 1 -> image 0 first;
    # text 2 -> images 0 and 2 tie at 0.5 above image 1 (0.3): rank 2; text 3 -> image 2 first
    assert result["txt_r1"] == pytest.approx(100 / 3) and result["txt_r5"] == pytest.approx(100.0)
    assert result["img_r1"] == pytest.approx(50.0) and result["img_r5"] == pytest.approx(100.0)
    assert result["r_mean"] == pytest.approx((100 / 3 + 100 + 100 + 50 + 100 + 100) / 6)
    assert retrieval_recalls(scores[:, [1, 2, 3]], [0, 1, 2], ks=(1, 2))["txt_r2"] == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="text 3 describes no image"):
        evaluate.load(metric_path("retrieval_recall")).compute(predictions=list(scores), references=[[0, 1], [2], []])


def test_auroc_is_the_share_of_positive_negative_pairs_ranked_right():
    from free_atm.metrics import auroc

    rng = np.random.default_rng(3)
    labels = rng.random(40) > 0.6
    scores = np.round(rng.random(40), 1)  # ties count one half
    pairs = [(p, n) for p in scores[labels] for n in scores[~labels]]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert auroc(labels, scores) == pytest.approx(expected)
    with pytest.raises(ValueError, match="AUROC needs both classes; got 3 positives and 0 negatives"):
        auroc([True] * 3, [0.1, 0.2, 0.3])
