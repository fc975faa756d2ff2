"""Judging generated shapes-world images without the generator: colour regions and an independent
shape-kind classifier trained on rendered scenes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from scipy.ndimage import binary_dilation, binary_erosion
from torch import nn

from ..masks import mask_boxes
from ..seeds import derive_seed
from ..world.render import BACKGROUNDS, COLOURS, SHAPES, render_scene

SILHOUETTE = 24  # side of the square a region's silhouette is resized to
JUDGE_WEIGHTS = "judge.safetensors"  # the shipped classifier, next to this module


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


def _jitter_edges(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grow or shrink each mask by one pixel, or keep it, at random: generated and decoded shapes have
    edges a pixel off from the renderer's, and the kind must not hinge on that."""
    out = masks.copy()
    for i, choice in enumerate(rng.integers(0, 3, len(masks))):
        if choice == 1:
            out[i] = binary_dilation(masks[i])
        elif choice == 2 and binary_erosion(masks[i]).any():
            out[i] = binary_erosion(masks[i])
    return out


def train_shape_classifier(num_scenes: int = 6000, steps: int = 2000, seed: int = 10_000) -> ShapeClassifier:
    """Train on the visible masks of rendered scenes (seeds disjoint from the generator's training data and
    from the benchmark's splits), their edges jittered by a pixel. About a minute on two CPU cores; the
    shipped judge (:func:`shape_classifier`) was trained by ``trainers/train_shape_judge.py`` with these
    defaults."""
    for name, value in (("num_scenes", num_scenes), ("steps", steps)):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    shapes, labels = [], []
    for index in range(num_scenes):
        scene = render_scene(derive_seed(seed, index))
        shapes.append(silhouettes(_jitter_edges(scene.masks, rng)))
        labels += [SHAPES.index(s) for s in scene.shapes]
    inputs, targets = torch.cat(shapes), torch.tensor(labels)
    model = ShapeClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(0, len(inputs), (128,), generator=generator)
        loss = F.cross_entropy(model(inputs[batch]), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def shape_classifier() -> ShapeClassifier:
    """The shipped judge: the same weights on every machine, so fidelity figures compare across runs."""
    model = ShapeClassifier()
    model.load_state_dict(load_file(str(resources.files("free_atm.evaluation") / JUDGE_WEIGHTS)))
    return model.eval()


@dataclass
class Judgement:
    """What the judge sees of each named object in one image: its colour region (``regions`` bool
    ``(M, H, W)``), whether that region is large enough to count (``colour_present``), and the kind the
    classifier names for it (``kinds``, ``None`` where the colour is absent)."""

    regions: np.ndarray
    colour_present: list[bool]
    kinds: list[str | None]

    def found(self, shapes: Sequence[str]) -> list[bool]:
        """Per object: its colour is present and its region has the named kind."""
        return [kind == shape for kind, shape in zip(self.kinds, shapes)]


def judge_image(image: np.ndarray, colours: Sequence[str], classifier: ShapeClassifier, min_pixels: int = 20):
    """Judge each named colour's region of ``image`` (uint8 ``(H, W, 3)``); returns a :class:`Judgement`."""
    regions = colour_regions(image)
    masks = np.stack([regions[c] for c in colours])
    present = [bool(m.sum() >= min_pixels) for m in masks]
    kinds = classifier.predict(masks)
    return Judgement(masks, present, [k if p else None for k, p in zip(kinds, present)])


def objects_present(
    image: np.ndarray, colours: Sequence[str], shapes: Sequence[str], classifier: ShapeClassifier, min_pixels: int = 20
) -> bool:
    """Whether every named object (its colour as a region of ``min_pixels`` or more, its kind as the
    classifier sees that region) is in the image."""
    return all(judge_image(image, colours, classifier, min_pixels).found(shapes))
