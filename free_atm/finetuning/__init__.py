"""Downstream fine-tuning of pretrained backbones (the paper's transfer tasks): semantic segmentation of
rendered scenes by shape kind, with transformers' UperNet head on a ResNet's stages or on a ViT's simple
feature pyramid."""

from .data import SEGMENTATION_CLASSES, shapes_segmentation_dataset
from .models import ViTUperNetConfig, ViTUperNetForSemanticSegmentation, segmentation_model
from .segmentation import SegmentationResult, finetune_segmentation, mean_iou

__all__ = [
    "SEGMENTATION_CLASSES",
    "SegmentationResult",
    "ViTUperNetConfig",
    "ViTUperNetForSemanticSegmentation",
    "finetune_segmentation",
    "mean_iou",
    "segmentation_model",
    "shapes_segmentation_dataset",
]
