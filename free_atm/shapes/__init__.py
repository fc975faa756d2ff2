"""The shapes world: procedural scenes with exact masks, and the small default model trained on them."""

from .dataset import shapes_dataset, shapes_features
from .render import BACKGROUNDS, COLOURS, SHAPES, Scene, caption_for, render_scene, shape_mask

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "SHAPES",
    "Scene",
    "caption_for",
    "render_scene",
    "shape_mask",
    "shapes_dataset",
    "shapes_features",
]
