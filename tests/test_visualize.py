"""The sample grid: cells large enough to read, mask outlines in each object's colour, captions."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from free_atm.visualize import PALETTE, dataset_grid


def _row():
    image = Image.new("RGB", (64, 64), (128, 128, 128))
    mask = np.zeros((64, 64), np.uint8)
    mask[16:32, 8:40] = 255
    return {
        "image": image,
        "prompt": "a red square on a gray background",
        "masks": [Image.fromarray(mask)],
        "boxes": [[8.0, 16.0, 40.0, 32.0]],
        "objects": ["red square"],
    }


def test_cells_are_enlarged_outlined_and_captioned():
    grid = np.asarray(dataset_grid([_row(), _row()], columns=2, cell=128)).astype(int)
    assert grid.shape[1] == 2 * 128 + 4 and grid.shape[0] > 128
    colour = PALETTE[0].astype(int)
    # the mask (rows 32-63, columns 16-79 at 2x) has its border drawn in the object's colour ...
    np.testing.assert_array_equal(grid[50, 17], colour)  # column 16 also holds the box
    np.testing.assert_array_equal(grid[62, 60], colour)
    # ... its inside tinted towards it but not painted over, and the outside untouched
    inside = grid[50, 50]
    assert (inside != colour).any() and (inside != 128).any()
    np.testing.assert_array_equal(grid[100, 100], [128, 128, 128])
    # the second cell starts after the 4 px gap and repeats the first
    np.testing.assert_array_equal(grid[:128, 132:260], grid[:128, :128])
    # the caption band under the image holds dark text on white
    band = grid[129:]
    assert (band.sum(-1) < 200).any() and (band == 255).all(-1).mean() > 0.5


def test_large_images_shrink_to_the_cell():
    row = _row()
    row["image"] = row["image"].resize((512, 512))
    row["masks"] = [m.resize((512, 512)) for m in row["masks"]]
    row["boxes"] = [[b * 8 for b in row["boxes"][0]]]
    assert np.asarray(dataset_grid([row], cell=128)).shape[1] == 128


def test_rejects_a_cell_too_small_to_read():
    with pytest.raises(ValueError, match="cell must be at least 64 pixels, got 32"):
        dataset_grid([_row()], cell=32)


def test_labels_stay_inside_the_picture_and_apart():
    """A long name at the right edge is moved in; names of boxes that share a corner do not overlap."""
    from free_atm.visualize import _font, _overlap, label_places

    font = _font(12)
    boxes = [np.array([50.0, 2, 64, 20]), np.array([0.0, 0, 30, 30]), np.array([0.0, 0, 20, 20])]
    places = label_places(boxes, ["purple triangle", "red circle", "blue square"], font, (64, 64))
    for left, top, right, bottom in places:
        assert left >= 0 and right < 64 and top >= 0 and bottom < 64
    assert not any(_overlap(a, b) for k, a in enumerate(places) for b in places[k + 1 :])
    assert places[0][2] == 63  # the long name moved left to end at the edge, not cut


def test_heat_maps_carry_their_colour_scale():
    from free_atm.demo.heatmap import RAMP, heatmap

    picture = np.asarray(heatmap(np.zeros((8, 8)), (96, 96)))  # an all-zero map: the darkest colour only
    assert picture.shape == (96, 96, 3)
    brightest = RAMP[-1].round().astype(np.uint8)
    assert (picture == brightest).all(axis=-1).any()  # the scale's top is drawn in the corner
