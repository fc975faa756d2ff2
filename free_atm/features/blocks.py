"""The addressable blocks of a diffusers U-Net, in the order its forward runs them, and its skip pairs.

A block is a sub-module whose output is a feature map: ``conv_in``, each resnet, attention, down- and
upsampler of the down and up blocks, and ``mid_block``. Ordinals count from 1 in forward order (as diffssl
numbers ADM's 37 blocks), found by running the U-Net once with hooks, never by reading its ``forward``:
copied or parsed ``forward`` methods break on every diffusers release.

Skip pairs (what DifFeed feeds back along): every output that a down block pushes on diffusers' skip stack
(``conv_in``, each resnet or the attention after it, each downsampler) is popped, last in first out, by one
resnet of the up blocks; an up block's attention j shares the skip of its resnet j.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

BLOCK_PATTERN = re.compile(
    r"conv_in|mid_block|(down|up)_blocks\.\d+\.(resnets|attentions|downsamplers|upsamplers)\.\d+"
)
_UNIT = re.compile(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)")


@dataclass(frozen=True)
class Block:
    """One addressable block: its 1-based forward ordinal, module name, output channels and grid."""

    ordinal: int
    name: str
    channels: int
    grid: tuple[int, int]

    def __str__(self) -> str:
        return f"{self.ordinal:>3}  {self.name:<28} {self.channels:>5} ch  {self.grid[0]}x{self.grid[1]}"


def feature_map(output) -> torch.Tensor:
    """The feature map a block returns: a tensor, the ``sample`` of a diffusers output, or a tuple's first."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "sample"):
        return output.sample
    return output[0]


def block_names(unet: torch.nn.Module) -> list[str]:
    """The names of the U-Net's addressable blocks, in module order (not yet forward order)."""
    return [name for name, _ in unet.named_modules() if BLOCK_PATTERN.fullmatch(name)]


def skip_pairs(blocks: list[Block]) -> dict[str, str]:
    """For each up-block resnet and attention, the down-path block whose skip connection feeds it."""
    names = [block.name for block in blocks]
    producers = []
    for name in names:
        unit = _UNIT.fullmatch(name)
        if name == "conv_in" or ".downsamplers." in name:
            producers.append(name)
        elif unit and unit[1] == "down":
            attention = f"down_blocks.{unit[2]}.attentions.{unit[4]}"
            if unit[3] == "attentions" or attention not in names:  # the unit's output: its attention if any
                producers.append(name)
    consumers = [
        name for name in names if (unit := _UNIT.fullmatch(name)) and unit[1] == "up" and unit[3] == "resnets"
    ]
    if len(producers) != len(consumers):
        raise ValueError(f"found {len(producers)} skip outputs but {len(consumers)} up-block resnets to take them")
    pairs = dict(zip(consumers, reversed(producers)))
    for name in names:
        unit = _UNIT.fullmatch(name)
        if unit and unit[1] == "up" and unit[3] == "attentions":
            pairs[name] = pairs[f"up_blocks.{unit[2]}.resnets.{unit[4]}"]
    return pairs
