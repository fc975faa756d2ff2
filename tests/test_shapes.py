"""The shapes world: exact masks, captions, determinism, and the dataset schema."""

from __future__ import annotations

import numpy as np
import pytest

from free_atm.world import COLOURS, SHAPES, caption_for, render_scene, shape_mask, shapes_dataset


def test_circle_pixel_count_matches_geometry():
    mask = shape_mask("circle", 32.0, 32.0, 10.0, 0.0, 64)
    y, x = np.mgrid[0:64, 0:64] + 0.5
    assert mask.sum() == np.count_nonzero((x - 32) ** 2 + (y - 32) ** 2 <= 100)
    assert abs(mask.sum() - np.pi * 100) < 2 * np.pi * 10  # within one perimeter of the true area


def test_axis_aligned_square_is_exact():
    mask = shape_mask("square", 32.0, 32.0, 16.0, 0.0, 64)  # circumradius 16: half side 16 / sqrt(2)
    inside = np.abs(np.arange(64) + 0.5 - 32) <= 16 / np.sqrt(2)
    np.testing.assert_array_equal(mask, inside[:, None] & inside[None, :])


@pytest.mark.parametrize("kind", SHAPES)
def test_rotated_shapes_have_their_area(kind):
    radius = 20.0
    areas = {  # analytic areas for circumradius r
        "circle": np.pi * radius**2,
        "square": 2 * radius**2,
        "triangle": 3 * np.sqrt(3) / 4 * radius**2,
        "star": 5 * radius * (0.45 * radius) * np.sin(np.pi / 5),
        "cross": 2 * (2 * radius) * (0.7 * radius) - (0.7 * radius) ** 2,
    }
    for angle in (0.3, 1.1):
        count = shape_mask(kind, 40.0, 40.0, radius, angle, 80).sum()
        assert abs(count - areas[kind]) / areas[kind] < 0.04, (kind, angle, count, areas[kind])


def test_scene_masks_are_the_visible_coloured_pixels():
    for seed in range(20):
        scene = render_scene(seed)
        assert not np.any(scene.masks.sum(0) > 1)  # visible masks never overlap
        for mask, colour in zip(scene.masks, scene.colours):
            painted = np.all(scene.image == COLOURS[colour], axis=-1)
            np.testing.assert_array_equal(mask, painted)
        assert scene.caption == caption_for(scene.colours, scene.shapes, scene.background)


def test_scenes_are_deterministic_and_varied():
    a, b = render_scene(7), render_scene(7)
    np.testing.assert_array_equal(a.image, b.image)
    counts = {len(render_scene(s).objects) for s in range(40)}
    assert counts == {1, 2, 3}


def test_caption_articles():
    assert (
        caption_for(["red", "blue"], ["circle", "star"], "gray") == "a red circle and a blue star on a gray background"
    )
    assert caption_for(["purple"], ["square"], "white").startswith("a purple square on a white")


def test_dataset_schema_and_labels():
    ds = shapes_dataset(4, seed=3)
    row = ds[0]
    scene_masks = [np.asarray(m) > 0 for m in row["masks"]]
    assert row["objects"] == [
        f"{ds.features['colours'].feature.names[c]} {SHAPES[k]}" for c, k in zip(row["colours"], row["labels"])
    ]
    for mask, box in zip(scene_masks, row["boxes"]):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert box == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
    again = shapes_dataset(4, seed=3)
    assert again[3]["seed"] == ds[3]["seed"] and again[3]["prompt"] == ds[3]["prompt"]
    with pytest.raises(ValueError, match="num_scenes must be positive, got 0"):
        shapes_dataset(0)
