"""Self-attention refinement: a running sum of a UNet's self-attention, and the maps propagated along it.

A cross-attention map is coarse and blurred by averaging over layers and steps; the model's own
self-attention says which positions it treats as one region. Propagating a map along it, ``S^power @ m``
(Dataset Diffusion, Nguyen et al., NeurIPS 2023), pulls the map onto the object's extent and edges.

Pitfall: the matrix is ``N x N`` per image. Only layers of at most 1,024 positions count by default and
only one sum per image is kept, at the finest counted grid (coarser layers are resized into it), so
memory depends neither on the number of steps nor on the number of layers. The capture processors that
feed it are in :mod:`.self_attention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import CaptureConfig

#: the largest self-attention layer (in positions) counted when ``refinement_scales`` is ``None``
DEFAULT_MAX_POSITIONS = 1024


def grid_of(scale: int, latent_size: tuple[int, int]) -> tuple[int, int]:
    """The ``(h, w)`` grid of a UNet layer at downsampling ``scale`` (UNet downsampling rounds up)."""
    return math.ceil(latent_size[0] / scale), math.ceil(latent_size[1] / scale)


def resize_attention(matrix: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """A row-stochastic ``(B, n, n)`` attention over a ``grid`` resized to ``size`` on both axes: the
    query axis bilinearly, the key axis bilinearly and then each row renormalised to sum to one."""
    if tuple(grid) == tuple(size):
        return matrix
    batch, n = matrix.shape[:2]
    keys = F.interpolate(matrix.reshape(batch * n, 1, *grid), size=size, mode="bilinear", align_corners=False)
    keys = keys.reshape(batch, *grid, -1).permute(0, 3, 1, 2)  # (B, N, h, w): queries last
    both = F.interpolate(keys, size=size, mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    return both / both.sum(-1, keepdim=True).clamp_min(1e-12)


class SelfAttentionAggregator:
    """Keeps one running ``(num_images, N, N)`` sum of head-averaged self-attention probabilities (the
    conditional pass), ``N`` being the positions of the finest counted grid, and how many layers it holds.

    Args:
        num_images: the images of the call (the conditional half of a guided batch).
        config: ``refinement_scales`` chooses the layers; its timestep window is that of the maps.
        available: the downsampling factors of the UNet's self-attention layers.
    """

    def __init__(self, num_images: int, config: CaptureConfig, available: set[int]) -> None:
        missing = sorted(set(config.refinement_scales or ()) - available)
        if missing:
            raise ValueError(
                f"refinement_scales {missing} match no self-attention layer; this UNet has self-attention at "
                f"scales {sorted(available)}"
            )
        self.num_images, self.config, self.available = num_images, config, available
        self.active = False
        self.scales: set[int] = set()
        self.latent_size: tuple[int, int] | None = None
        self.grid: tuple[int, int] | None = None
        self.sums: torch.Tensor | None = None
        self.count = 0

    def start_call(self, latent_size: tuple[int, int], active: bool) -> None:
        """Before each denoiser call: the latent size (which fixes the counted scales and the sum's grid)
        and whether this call counts (the maps' timestep window)."""
        self.active, self.latent_size = active, latent_size
        if self.config.refinement_scales is not None:
            scales = set(self.config.refinement_scales)
        else:
            small = {s for s in self.available if math.prod(grid_of(s, latent_size)) <= DEFAULT_MAX_POSITIONS}
            scales = small or {max(self.available)}
        self.scales = scales
        self.grid = grid_of(min(scales), latent_size)

    def add(self, probs: torch.Tensor, grid: tuple[int, int]) -> None:
        """Add one layer's head-averaged probabilities ``(num_images, n, n)`` over ``grid``."""
        probs = resize_attention(probs, grid, self.grid)
        if self.sums is None:
            self.sums = probs
        else:
            self.sums += probs
        self.count += 1

    def result(self) -> torch.Tensor:
        """The mean self-attention ``(num_images, N, N)`` over every counted layer and step."""
        if self.count == 0:
            raise ValueError(
                f"no self-attention was captured for refinement: no layer at scales {sorted(self.scales)} within "
                f"timestep_range={self.config.timestep_range}; widen the window or choose other refinement_scales"
            )
        return self.sums / self.count


def refine_maps(maps: torch.Tensor, attention: torch.Tensor, grid: tuple[int, int], power: int) -> torch.Tensor:
    """``S^power @ m`` for maps ``(B, M, h, w)`` and a row-stochastic ``S`` ``(B, N, N)`` over ``grid``: each
    position takes the attention-weighted mean of the map over the positions it attends to, ``power``
    times. The maps are resized to ``grid`` and back; the result is as large as the maps."""
    size = maps.shape[-2:]
    flat = F.interpolate(maps.float(), size=grid, mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    for _ in range(power):
        flat = attention @ flat
    refined = flat.transpose(1, 2).reshape(*maps.shape[:2], *grid)
    return F.interpolate(refined, size=size, mode="bilinear", align_corners=False)
