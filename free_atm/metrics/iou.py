"""Intersection over union of masks and of boxes."""

from __future__ import annotations

import numpy as np

from ..masks import mask_boxes


def mask_iou(prediction: np.ndarray, reference: np.ndarray) -> float:
    """IoU of two boolean masks of one shape; two empty masks count as 0 (nothing was found)."""
    if prediction.shape != reference.shape:
        raise ValueError(f"mask shapes differ: prediction {prediction.shape}, reference {reference.shape}")
    union = np.logical_or(prediction, reference).sum()
    return float(np.logical_and(prediction, reference).sum() / union) if union else 0.0


def box_iou(prediction: np.ndarray, reference: np.ndarray) -> float:
    """IoU of two xyxy boxes; a NaN (empty) box scores 0."""
    if np.isnan(prediction).any() or np.isnan(reference).any():
        return 0.0
    width = min(prediction[2], reference[2]) - max(prediction[0], reference[0])
    height = min(prediction[3], reference[3]) - max(prediction[1], reference[1])
    inter = max(width, 0.0) * max(height, 0.0)
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    union = area(prediction) + area(reference) - inter
    return float(inter / union) if union > 0 else 0.0


def object_scores(predictions: np.ndarray, references: np.ndarray) -> tuple[list[float], list[float]]:
    """Per object of one image: mask IoU and IoU of the masks' boxes; object ``m`` pairs with object ``m``."""
    predictions, references = np.asarray(predictions, bool), np.asarray(references, bool)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predicted masks for {len(references)} reference masks")
    pred_boxes, ref_boxes = mask_boxes(predictions), mask_boxes(references)
    return (
        [mask_iou(p, r) for p, r in zip(predictions, references)],
        [box_iou(p, r) for p, r in zip(pred_boxes, ref_boxes)],
    )
