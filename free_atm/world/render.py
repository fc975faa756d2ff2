"""Procedural scenes with exact ground truth: coloured shapes on plain or textured backgrounds.

Each pixel belongs to a shape when its centre lies inside the shape's geometry; the image is painted by
the same rule (no anti-aliasing), so the masks are exact for the pixels drawn. Later shapes occlude
earlier ones, and the masks are the visible parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 225),
    "yellow": (235, 205, 35),
    "purple": (150, 55, 190),
}
BACKGROUNDS = {"gray": (128, 128, 128), "white": (236, 236, 236), "black": (28, 28, 28)}
TEXTURES = ("plain", "stripes", "checker", "noise")


@dataclass
class Scene:
    """One rendered scene: ``image`` uint8 ``(H, W, 3)``, visible ``masks`` bool ``(M, H, W)`` in
    ``objects`` order, and what the caption says."""

    image: np.ndarray
    masks: np.ndarray
    caption: str
    objects: list[str]
    shapes: list[str]
    colours: list[str]
    background: str
    texture: str
    seed: int


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption_for(colours: list[str], shapes: list[str], background: str) -> str:
    """``"a red circle, a blue square and a yellow star on a gray background"``."""
    phrases = [f"{_article(c)} {c} {s}" for c, s in zip(colours, shapes)]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"{listed} on {_article(background)} {background} background"


def _inside_polygon(x: np.ndarray, y: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule for points ``(x, y)`` against a closed polygon ``(K, 2)``."""
    inside = np.zeros(x.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(vertices, np.roll(vertices, -1, axis=0)):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < x_at)
    return inside


def _rotated(points: np.ndarray, angle: float, cx: float, cy: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]]) + (cx, cy)


def shape_mask(kind: str, cx: float, cy: float, radius: float, angle: float, size: int) -> np.ndarray:
    """Pixels of an ``size x size`` image whose centres lie inside the shape."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    if kind == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    if kind == "square":
        half = radius / np.sqrt(2)
        corners = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
        return _inside_polygon(x, y, _rotated(corners, angle, cx, cy))
    if kind == "triangle":
        theta = angle + np.arange(3) * 2 * np.pi / 3
        return _inside_polygon(x, y, np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], 1))
    if kind == "star":
        theta = angle + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
        return _inside_polygon(x, y, np.stack([cx + r * np.cos(theta), cy + r * np.sin(theta)], 1))
    if kind == "cross":
        arm, long = radius * 0.35, radius
        bars = (
            np.array([[-long, -arm], [long, -arm], [long, arm], [-long, arm]]),
            np.array([[-arm, -long], [arm, -long], [arm, long], [-arm, long]]),
        )
        return _inside_polygon(x, y, _rotated(bars[0], angle, cx, cy)) | _inside_polygon(
            x, y, _rotated(bars[1], angle, cx, cy)
        )
    raise ValueError(f"unknown shape {kind!r}; choose one of {SHAPES}")


def _background(colour: str, texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    base = np.array(BACKGROUNDS[colour], dtype=np.float32)
    shade = np.zeros((size, size), np.float32)
    y, x = np.mgrid[0:size, 0:size]
    period = int(rng.integers(6, 14))
    if texture == "stripes":
        shade = np.where(((x + y) // period) % 2 == 0, 1.0, -1.0)
    elif texture == "checker":
        shade = np.where((x // period + y // period) % 2 == 0, 1.0, -1.0)
    elif texture == "noise":
        shade = rng.uniform(-1.0, 1.0, (size, size))
    return np.clip(base + 18.0 * shade[..., None], 0, 255)


def render_scene(
    seed: int, size: int = 64, max_objects: int = 3, min_visible: float = 0.5, max_tries: int = 100
) -> Scene:
    """Render the scene of ``seed``: 1 to ``max_objects`` shapes of distinct kinds and colours.

    Every object keeps at least ``min_visible`` of its area visible after occlusion.
    """
    if not 1 <= max_objects <= min(len(SHAPES), len(COLOURS)):
        raise ValueError(f"max_objects must lie in [1, {min(len(SHAPES), len(COLOURS))}], got {max_objects}")
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, max_objects + 1))
    shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), count, replace=False)]
    colours = [list(COLOURS)[i] for i in rng.choice(len(COLOURS), count, replace=False)]
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    for _ in range(max_tries):
        full = []
        for kind in shapes:
            radius = rng.uniform(0.12, 0.24) * size
            cx, cy = rng.uniform(radius, size - radius, 2)
            full.append(shape_mask(kind, cx, cy, radius, rng.uniform(0, 2 * np.pi), size))
        visible = [m & ~np.any(full[i + 1 :], axis=0) if i + 1 < count else m for i, m in enumerate(full)]
        if all(v.sum() >= min_visible * f.sum() > 0 for v, f in zip(visible, full)):
            break
    else:
        raise RuntimeError(f"could not place {count} shapes with {min_visible:.0%} visible for seed {seed}")
    image = _background(background, texture, size, rng)
    for mask, colour in zip(visible, colours):
        image[mask] = COLOURS[colour]
    return Scene(
        image=image.round().astype(np.uint8),
        masks=np.stack(visible),
        caption=caption_for(colours, shapes, background),
        objects=[f"{c} {s}" for c, s in zip(colours, shapes)],
        shapes=shapes,
        colours=colours,
        background=background,
        texture=texture,
        seed=seed,
    )
