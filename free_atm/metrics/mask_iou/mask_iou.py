"""Mask IoU: per-object mask IoU, mean IoU and box IoU, as an ``evaluate`` metric module.

import evaluate
from free_atm.metrics import metric_path
metric = evaluate.load(metric_path("mask_iou"))
metric.compute(predictions=[masks_of_image], references=[true_masks_of_image])
"""

import datasets
import evaluate
import numpy as np

from free_atm.metrics.iou import object_scores

_DESCRIPTION = """Intersection over union between predicted and reference binary masks, object by object
(object m of a prediction pairs with object m of its reference), and between the boxes that enclose them."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per image, boolean masks (num_objects, H, W).
    references: per image, boolean masks (num_objects, H, W), in the same object order.
Returns:
    mean_iou: mean mask IoU over all objects.
    box_iou: mean IoU of the objects' enclosing boxes.
    per_object_iou, per_object_box_iou: the scores of every object, image by image.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MaskIou(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        masks = datasets.Sequence(datasets.Sequence(datasets.Sequence(datasets.Value("bool"))))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": masks, "references": masks}),
        )

    def _compute(self, predictions, references):
        ious, box_ious = [], []
        for prediction, reference in zip(predictions, references):
            mask_scores, box_scores = object_scores(np.asarray(prediction, bool), np.asarray(reference, bool))
            ious += mask_scores
            box_ious += box_scores
        return {
            "mean_iou": float(np.mean(ious)) if ious else float("nan"),
            "box_iou": float(np.mean(box_ious)) if box_ious else float("nan"),
            "per_object_iou": ious,
            "per_object_box_iou": box_ious,
        }
