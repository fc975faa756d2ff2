"""The pixel term of the grounding loss: each object's map shaped like its mask, pixel by pixel (after the
pixel loss of TokenCompose, Wang et al., CVPR 2024), scale-free because masks are cut from normalised maps.

For object ``m`` with ``A_m`` the sum of its tokens' maps averaged over the counted layers, min-max
normalised as :func:`free_atm.masks.normalize_maps` normalises the maps masks are cut from, and ``M_m``
its mask area-resized to the map:

    loss = mean over objects of mean_p BCE(A_m(p), M_m(p)),   BCE(a, y) = -y log a - (1 - y) log(1 - a)

over every object whose mask is not empty.

Pitfall: TokenCompose scores the raw attention probability, which on a UNet is a share of the text tokens
alone; on SD3 and Flux the captured probability is a share of text and image keys together, so the raw
term would ask image tokens to stop reading the image. Normalising asks only for the shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...masks import normalize_maps

#: the normalised map is kept this far from 0 and 1, where the cross-entropy's logarithm diverges
EPSILON = 1e-4


def pixel_loss(layer_maps: torch.Tensor, masks: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
    """The mean binary cross-entropy (module docstring) over counted objects; 0 when none counts.

    Args:
        layer_maps: ``(B, T, layers, h, w)``, each token column's map per counted layer.
        masks: ``(B, M, H, W)`` object masks in [0, 1].
        owners: ``(B, T)``, the object of each column, ``-1`` for padding
            (:func:`free_atm.training.grounding.loss.token_columns`).
    """
    targets = F.adaptive_avg_pool2d(masks.float(), layer_maps.shape[-2:])  # (B, M, h, w)
    owned = F.one_hot(owners.clamp_min(0), masks.shape[1]).float() * (owners >= 0)[..., None]  # (B, T, M)
    objects = torch.einsum("btm,bthw->bmhw", owned, layer_maps.float().mean(2))
    counted = (owned.sum(1) > 0) & (targets.flatten(2).sum(-1) > 0)  # (B, M): a token and a drawn mask
    shaped = normalize_maps(objects).clamp(EPSILON, 1 - EPSILON)
    per_object = F.binary_cross_entropy(shaped, targets, reduction="none").mean((-2, -1))
    return (per_object * counted).sum() / counted.sum().clamp_min(1)
