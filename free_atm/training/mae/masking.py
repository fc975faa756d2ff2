"""Attention-guided masking for ViTMAE (Free-ATM section 3.3.2), as the ``noise`` that
``ViTMAEForPreTraining`` takes.

ViTMAE keeps the ``int(L * (1 - mask_ratio))`` patches of *lowest* noise and masks the rest, and draws
fresh noise on every call unless given some. A share ``guided_ratio`` (the paper's beta) of the masked
patches is taken by highest attention score: their noise is raised above 1, above every uniform draw,
so they are masked first; the remaining masked patches are those of highest uniform noise among the
others, i.e. chosen at random. The noise is built in one vectorised step on the batch's device: no
per-sample loop and no host synchronisation (the prior art, HPM, loops per sample through NumPy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCHEDULES = ("linear", "constant")


def patch_scores(object_maps: torch.Tensor, object_valid: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Each patch's attention score ``(B, L)``, patches in ViT order (row by row): the mean of every
    object's soft map over the patch, combined over the objects by their maximum, so that a patch scores
    as the object most present in it and one covered by two objects is not counted twice. Invalid object
    slots score 0. ``object_maps (B, M, H, W)`` at the image's resolution."""
    pooled = F.avg_pool2d(object_maps.float(), patch_size) * object_valid[..., None, None]
    return pooled.amax(1).flatten(1)


def num_masked_patches(num_patches: int, mask_ratio: float) -> int:
    """How many of ``num_patches`` ViTMAE masks at ``mask_ratio`` (it keeps ``int(L * (1 - ratio))``)."""
    return num_patches - int(num_patches * (1 - mask_ratio))


def guided_noise(
    scores: torch.Tensor, mask_ratio: float, guided_ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Noise ``(B, L)`` for ``ViTMAEForPreTraining(pixel_values, noise=...)`` that masks the
    ``round(guided_ratio * num_masked)`` patches of highest ``scores`` (ties broken at random) and a uniform
    random choice of the other masked patches. ``guided_ratio`` 0 is plain random masking. Where fewer
    patches than that score above 0, the rest of the guided share falls on random zero-score patches."""
    if not 0.0 <= guided_ratio <= 1.0:
        raise ValueError(f"the guided ratio must lie in [0, 1], got {guided_ratio}")
    batch, length = scores.shape
    noise = torch.rand(batch, length, device=scores.device, generator=generator)
    guided = round(guided_ratio * num_masked_patches(length, mask_ratio))
    if guided == 0:
        return noise
    # a random order first, then a stable sort by score: equal scores keep that random order
    order = torch.rand(batch, length, device=scores.device, generator=generator).argsort(1)
    by_score = scores.gather(1, order).argsort(dim=1, descending=True, stable=True)
    top = order.gather(1, by_score[:, :guided])
    return noise.scatter_add(1, top, torch.ones_like(top, dtype=noise.dtype))


def guided_ratio_at(progress: float, maximum: float = 0.8, schedule: str = "linear") -> float:
    """The paper's beta at ``progress`` in [0, 1] of training: rising linearly from 0 to ``maximum``, or
    ``maximum`` throughout (``constant``)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"the guided schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if not 0.0 <= maximum <= 1.0:
        raise ValueError(f"the guided ratio's ceiling must lie in [0, 1], got {maximum}")
    return maximum * min(max(progress, 0.0), 1.0) if schedule == "linear" else maximum
