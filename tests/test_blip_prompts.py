"""Position prompts: blocks against hand geometry (edges included, and after a crop), prompt strings, and the
batched mask boxes against the per-mask reference."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from free_atm.masks import batched_mask_boxes, mask_boxes
from free_atm.training import MaskConsistentViews
from free_atm.training.blip import object_blocks, position_prompt, prompted_caption


def square(centre_x: int, centre_y: int, half: int = 1, size: int = 9) -> torch.Tensor:
    """A (2 half + 1)-pixel square whose box centre is (centre_x + 0.5, centre_y + 0.5)."""
    mask = torch.zeros(size, size)
    mask[max(0, centre_y - half) : centre_y + half + 1, max(0, centre_x - half) : centre_x + half + 1] = 1
    return mask


@pytest.mark.parametrize(
    ("mask", "block"),
    [
        (square(1, 1), 1),  # top left of a 9 x 9 image cut in 3 x 3 blocks of 3 px
        (square(4, 1), 2),
        (square(7, 7), 9),
        (square(4, 4), 5),
        (square(1, 7), 7),
        # box x 2..4 (exclusive), centre x 3.0: on the boundary between columns 1 and 2 -> the right one
        (torch.nn.functional.pad(torch.ones(1, 2), (2, 5, 4, 4)), 5),
        # the whole image: centre (4.5, 4.5) -> the middle block
        (torch.ones(9, 9), 5),
        # box reaching the right and bottom edges, centre (8.5, 8.5) -> the last block
        (torch.nn.functional.pad(torch.ones(1, 1), (8, 0, 8, 0)), 9),
    ],
)
def test_block_of_the_box_centre_numbered_from_1_row_by_row(mask, block):
    blocks = object_blocks(mask[None, None], torch.ones(1, 1, dtype=torch.bool), grid=3)
    assert blocks.tolist() == [[block]]


def test_invalid_objects_and_empty_masks_get_no_block():
    maps = torch.stack([square(1, 1), torch.zeros(9, 9), square(7, 7)])[None]
    blocks = object_blocks(maps, torch.tensor([[True, True, False]]), grid=3)
    assert blocks.tolist() == [[1, 0, 0]]


def test_blocks_follow_the_object_through_a_flip_and_a_crop():
    maps = torch.zeros(1, 1, 60, 60)
    maps[0, 0, 5:15, 5:15] = 1  # top left: block 1
    views = MaskConsistentViews(60, color_strength=0.0, grayscale=0.0, blur=0.0)
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        view = views.single(torch.rand(1, 3, 60, 60), maps, torch.ones(1, 1, dtype=torch.bool))
        blocks = object_blocks(view.object_maps, view.object_valid, grid=3)
        # the reference: the block of the centre of the moved mask, by hand
        mask = view.object_maps[0, 0].numpy() >= 0.5
        if not mask.any():
            assert blocks.item() == 0
            continue
        rows, columns = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        centre = ((columns[0] + columns[-1] + 1) / 2, (rows[0] + rows[-1] + 1) / 2)
        expected = 1 + min(2, int(centre[1] // 20)) * 3 + min(2, int(centre[0] // 20))
        assert blocks.item() == expected
        seen.add(expected)
    assert len(seen) > 1  # crops and flips moved the object to other blocks


def test_batched_boxes_equal_the_per_mask_boxes():
    rng = np.random.default_rng(0)
    masks = rng.random((4, 3, 12, 10)) > 0.9
    masks[1, 2] = False
    expected = np.stack([mask_boxes(m) for m in masks])
    np.testing.assert_array_equal(batched_mask_boxes(torch.from_numpy(masks)).numpy(), expected)


def test_prompt_strings():
    assert position_prompt("dog", 4) == "The dog is in block 4."
    caption = "a red circle and a blue star on a gray background"
    objects, blocks = ["red circle", "blue star"], [4, 9]
    assert prompted_caption(caption, objects, blocks) == (
        "a red circle and a blue star on a gray background. The red circle is in block 4. The blue star is in block 9."
    )
    assert prompted_caption(caption, objects, [0, 9]).endswith("background. The blue star is in block 9.")
    assert prompted_caption(caption, objects, blocks, "none") == caption
    assert prompted_caption(caption, objects, [0, 0]) == caption
    ones = {prompted_caption(caption, objects, blocks, "one", random.Random(seed)) for seed in range(20)}
    assert ones == {f"{caption}. The red circle is in block 4.", f"{caption}. The blue star is in block 9."}
    with pytest.raises(ValueError, match="position prompts must be one of all, one, none, got .some."):
        prompted_caption(caption, objects, blocks, "some")
