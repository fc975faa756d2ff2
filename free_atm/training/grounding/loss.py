"""The grounding loss on captured maps: each object word's attention inside its object (the token loss of
TokenCompose, Wang et al., CVPR 2024), computed from the maps the capture processors aggregate.

The capture is given one column per (object, token) pair (:func:`token_columns`), so that it keeps each
token's head-averaged map per counted layer (``keep="layers"``), with gradients. For layer ``l`` and token
``k`` of object ``m``, with ``A`` that map and ``M_m`` the object's mask area-resized to it:

    share_lk = sum_p A_lk(p) M_m(p) / sum_p A_lk(p),        loss = mean over l and k of (1 - share_lk)^2

over the tokens of every object whose mask is not empty.

Pitfall: each token answers for itself. On an object's averaged map ("red" and "star" at half weight each)
the loss is met by "red" alone, with no attention left on "star".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_columns(token_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From object token weights ``(B, L, M)`` (:func:`free_atm.tokens.object_token_weights`): one column
    per (object, token) pair ``(B, L, T)``, each a 1 at its token, and the object of each column ``(B, T)``
    (``-1``: a padding column of an image with fewer pairs)."""
    pairs = [(token_weights[b] > 0).nonzero().tolist() for b in range(token_weights.shape[0])]  # (token, object)
    width = max((len(p) for p in pairs), default=0)
    columns = token_weights.new_zeros(token_weights.shape[0], token_weights.shape[1], width)
    owners = torch.full((token_weights.shape[0], width), -1, dtype=torch.long, device=token_weights.device)
    for b, image_pairs in enumerate(pairs):
        for t, (token, owner) in enumerate(sorted(image_pairs, key=lambda pair: (pair[1], pair[0]))):
            columns[b, token, t] = 1.0
            owners[b, t] = owner
    return columns, owners


def grounding_loss(layer_maps: torch.Tensor, masks: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
    """The mean of ``(1 - share)^2`` (module docstring) over layers and counted tokens; 0 when none counts.

    Args:
        layer_maps: ``(B, T, layers, h, w)``, each token column's map per counted layer.
        masks: ``(B, M, H, W)`` object masks in [0, 1].
        owners: ``(B, T)``, the object of each column, ``-1`` for padding (:func:`token_columns`).
    """
    batch, tokens, layers, height, width = layer_maps.shape
    inside = F.adaptive_avg_pool2d(masks.float(), (height, width)).flatten(2)  # (B, M, h * w)
    owned = inside.gather(1, owners.clamp_min(0)[..., None].expand(-1, -1, inside.shape[-1]))  # (B, T, h * w)
    counted = (owners >= 0) & (owned.sum(-1) > 0)  # (B, T): a real column whose object has a mask
    maps = layer_maps.float().flatten(3)  # (B, T, layers, h * w)
    share = (maps * owned[:, :, None]).sum(-1) / maps.sum(-1).clamp_min(1e-8)  # (B, T, layers)
    weight = counted[..., None].float()
    return ((1 - share).square() * weight).sum() / (weight.sum() * layers).clamp_min(1)
