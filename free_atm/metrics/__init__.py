"""Metrics: IoU functions and ``evaluate`` metric modules (load them with ``evaluate.load(metric_path(name))``)."""

from importlib import resources

from .iou import box_iou, mask_iou, object_scores
from .ranking import auroc
from .retrieval import retrieval_recalls

METRICS = ("mask_iou", "retrieval_recall")


def metric_path(name: str) -> str:
    """The folder of an ``evaluate`` metric module shipped with free-atm."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {METRICS}")
    return str(resources.files("free_atm.metrics") / name)


__all__ = ["METRICS", "auroc", "box_iou", "mask_iou", "metric_path", "object_scores", "retrieval_recalls"]
