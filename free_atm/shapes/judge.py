"""Judging generated shapes-world images without the generator: colour regions and an independent
shape-kind classifier trained on rendered scenes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..masks import mask_boxes
from ..seeds import derive_seed
from .render import BACKGROUNDS, COLOURS, SHAPES, render_scene

SILHOUETTE = 24  # side of the square a region's silhouette is resized to


def _palette() -> tuple[list[str], np.ndarray]:
    """Object colours, then background colours with their texture shades: names and RGB ``(K, 3)``."""
    palette = {**COLOURS}
    for name, rgb in BACKGROUNDS.items():
        for shade in (-18, 0, 18):
            palette[f"{name}{shade}"] = tuple(int(np.clip(c + shade, 0, 255)) for c in rgb)
    return list(palette), np.array(list(palette.values()), dtype=np.float32)


PALETTE_NAMES, PALETTE = _palette()


def colour_regions(image: np.ndarray, max_distance: float = 90.0) -> dict[str, np.ndarray]:
    """Per object colour, the pixels whose nearest palette colour (objects, backgrounds and their texture
    shades) is that colour, within ``max_distance`` in RGB."""
    distance = np.linalg.norm(image.astype(np.float32)[..., None, :] - PALETTE, axis=-1)
    nearest = distance.argmin(-1)
    close = distance.min(-1) <= max_distance
    return {name: (nearest == PALETTE_NAMES.index(name)) & close for name in COLOURS}


def silhouettes(masks: np.ndarray) -> torch.Tensor:
    """Each mask cropped to its box, padded to a square and resized: ``(M, 1, SILHOUETTE, SILHOUETTE)``."""
    crops = []
    for mask, box in zip(masks, mask_boxes(masks)):
        if np.isnan(box).any():
            crops.append(torch.zeros(1, 1, SILHOUETTE, SILHOUETTE))
            continue
        x0, y0, x1, y1 = box.astype(int)
        crop = torch.from_numpy(mask[y0:y1, x0:x1].astype(np.float32))
        side = max(crop.shape)
        padded = torch.zeros(side, side)
        top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
        padded[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
        crops.append(F.interpolate(padded[None, None], size=(SILHOUETTE, SILHOUETTE), mode="area"))
    return torch.cat(crops) if crops else torch.zeros(0, 1, SILHOUETTE, SILHOUETTE)


class ShapeClassifier(nn.Module):
    """A small CNN that names the shape kind of a silhouette."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, len(SHAPES)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def predict(self, masks: np.ndarray) -> list[str]:
        """The shape kind of each mask ``(M, H, W)``."""
        return [SHAPES[i] for i in self(silhouettes(masks)).argmax(-1).tolist()] if len(masks) else []


def train_shape_classifier(num_scenes: int = 3000, steps: int = 600, seed: int = 10_000) -> ShapeClassifier:
    """Train on the visible masks of rendered scenes (seeds disjoint from the generator's training data)."""
    torch.manual_seed(seed)
    shapes, labels = [], []
    for index in range(num_scenes):
        scene = render_scene(derive_seed(seed, index))
        shapes.append(silhouettes(scene.masks))
        labels += [SHAPES.index(s) for s in scene.shapes]
    inputs, targets = torch.cat(shapes), torch.tensor(labels)
    model = ShapeClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(0, len(inputs), (128,), generator=generator)
        loss = F.cross_entropy(model(inputs[batch]), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def objects_present(
    image: np.ndarray, colours: Sequence[str], shapes: Sequence[str], classifier: ShapeClassifier, min_pixels: int = 20
) -> bool:
    """Whether every named object (its colour as a region of ``min_pixels`` or more, its kind as the
    classifier sees that region) is in the image."""
    regions = colour_regions(image)
    masks = np.stack([regions[c] for c in colours])
    if any(m.sum() < min_pixels for m in masks):
        return False
    return classifier.predict(masks) == list(shapes)
