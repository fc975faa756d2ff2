"""Position prompts: "The dog is in block 4." for every object, from its mask after augmentation.

Numbering: the image is cut into ``grid`` x ``grid`` equal blocks numbered from 1, row by row from the
top left (3 x 3: 1 2 3 / 4 5 6 / 7 8 9). An object is in the block that holds the centre of its mask's
box; a centre on a boundary between blocks belongs to the block right of or below it, and one on the
image's right or bottom edge to the last block.

Pitfall: crops and flips move objects between blocks, so the blocks come from the object maps of the
augmented view, never from the dataset's boxes; an object whose mask left the crop gets no prompt.
"""

from __future__ import annotations

import random

import torch

from ...masks import batched_mask_boxes

PROMPT_MODES = ("all", "one", "none")


def object_blocks(
    object_maps: torch.Tensor, object_valid: torch.Tensor, grid: int = 3, threshold: float = 0.5
) -> torch.Tensor:
    """The block (1 to ``grid**2``) of each object ``(B, M)``, 0 for an invalid object or an empty mask.
    ``object_maps (B, M, H, W)`` soft maps of the view, thresholded at ``threshold``."""
    if grid < 1:
        raise ValueError(f"the block grid must be at least 1, got {grid}")
    height, width = object_maps.shape[-2:]
    boxes = batched_mask_boxes(object_maps >= threshold)
    centre_x, centre_y = (boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2
    column = (centre_x * grid / width).floor().clamp(0, grid - 1)
    row = (centre_y * grid / height).floor().clamp(0, grid - 1)
    block = (row * grid + column + 1).nan_to_num(0).long()
    return block * object_valid.bool()


def check_prompt_mode(mode: str) -> None:
    """``ValueError`` naming ``mode`` unless it is one of :data:`PROMPT_MODES`."""
    if mode not in PROMPT_MODES:
        raise ValueError(f"position prompts must be one of {', '.join(PROMPT_MODES)}, got {mode!r}")


def position_prompt(name: str, block: int) -> str:
    """The paper's template: ``The [O] is in block [P].``"""
    return f"The {name} is in block {block}."


def prompted_caption(
    caption: str, objects: list[str], blocks: list[int], mode: str = "all", rng: random.Random | None = None
) -> str:
    """``caption`` (closed with a full stop) followed by the prompts of its objects with a block
    (``blocks[m] > 0``): all of them (the paper), one chosen at random (``one``, as PTP does; ``rng`` draws
    it), or none."""
    check_prompt_mode(mode)
    placed = [position_prompt(name, block) for name, block in zip(objects, blocks) if block > 0]
    if mode == "none" or not placed:
        return caption
    if mode == "one":
        placed = [(rng or random).choice(placed)]
    sentence = caption.rstrip()
    if not sentence.endswith((".", "!", "?")):
        sentence += "."
    return " ".join([sentence, *placed])
