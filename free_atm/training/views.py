"""Mask-consistent augmented views, batched on the training device with kornia: two per image for
contrastive learning, one for masked image modelling.

Geometric augmentations (random resized crop, flip) move the image and its soft object maps together;
photometric ones (colour jitter, grayscale, blur) touch the image only, and are left out when their
strength or probability is 0. An object keeping less than ``min_mass`` of its map mass in either of two
views is invalid in both; in a single view, one keeping none is invalid.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn


def maps_at_image_size(pixel_values: torch.Tensor, object_maps: torch.Tensor) -> torch.Tensor:
    """``object_maps (B, M, h, w)`` resized bilinearly to the images' ``(H, W)``, in float32."""
    return F.interpolate(object_maps.float(), size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)


@dataclass
class TwoViews:
    """Per view: ``pixel_values (B, 3, H, W)`` and ``object_maps (B, M, H, W)``; ``object_valid (B, M)``."""

    pixel_values_1: torch.Tensor
    pixel_values_2: torch.Tensor
    object_maps_1: torch.Tensor
    object_maps_2: torch.Tensor
    object_valid: torch.Tensor


@dataclass
class OneView:
    """``pixel_values (B, 3, H, W)``, ``object_maps (B, M, H, W)`` moved with them, ``object_valid (B, M)``."""

    pixel_values: torch.Tensor
    object_maps: torch.Tensor
    object_valid: torch.Tensor


class MaskConsistentViews(nn.Module):
    """SimCLR's augmentation applied to images and their object maps alike; ``color_strength`` is SimCLR's
    colour-distortion strength s (jitter of brightness, contrast and saturation 0.8 s, of hue 0.2 s unless
    ``hue`` is given; 0.5 turns the hue circle all the way)."""

    def __init__(
        self,
        size: int = 64,
        scale: tuple[float, float] = (0.3, 1.0),
        min_mass: float = 0.2,
        color_strength: float = 1.0,
        hue: float | None = None,
        grayscale: float = 0.2,
        blur: float = 0.5,
    ) -> None:
        super().__init__()
        self.min_mass = min_mass
        # maps ride along as extra channels: one draw of crop and flip, bilinear for image and maps alike
        self.geometric = nn.Sequential(K.RandomResizedCrop((size, size), scale=scale), K.RandomHorizontalFlip())
        kernel = max(3, (size // 10) | 1)
        hue = 0.2 * color_strength if hue is None else hue
        photometric = [
            (color_strength or hue, K.ColorJitter(*(0.8 * color_strength,) * 3, hue, p=0.8)),
            (grayscale, K.RandomGrayscale(p=grayscale)),
            (blur, K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=blur)),
        ]
        self.photometric = nn.Sequential(*(op for strength, op in photometric if strength))

    def view(self, pixels: torch.Tensor, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        moved = self.geometric(torch.cat([pixels, maps.to(pixels.dtype)], dim=1))
        return self.photometric(moved[:, :3]), moved[:, 3:]

    @torch.no_grad()
    def single(self, pixel_values: torch.Tensor, object_maps: torch.Tensor, object_valid: torch.Tensor) -> OneView:
        """One view of each image, its maps moved with it (inputs as for :meth:`forward`)."""
        image, maps = self.view(pixel_values, maps_at_image_size(pixel_values, object_maps))
        return OneView(image, maps, object_valid.bool() & (maps.sum((-2, -1)) > 0))

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor, object_maps: torch.Tensor, object_valid: torch.Tensor) -> TwoViews:
        """``pixel_values`` in [0, 1]; ``object_maps (B, M, h, w)`` soft maps in [0, 1] (resized to the image)."""
        maps = maps_at_image_size(pixel_values, object_maps)
        mass = maps.sum((-2, -1))
        (image_1, maps_1), (image_2, maps_2) = self.view(pixel_values, maps), self.view(pixel_values, maps)
        kept = torch.minimum(maps_1.sum((-2, -1)), maps_2.sum((-2, -1))) / mass.clamp_min(1e-6)
        valid = object_valid.bool() & (mass > 0) & (kept >= self.min_mass)
        return TwoViews(image_1, image_2, maps_1, maps_2, valid)
