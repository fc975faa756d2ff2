"""The shapes world: procedural scenes of coloured shapes with exact masks, and their dataset."""

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
