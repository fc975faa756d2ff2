"""Attentive pooling (Free-ATM eq. 2): a feature grid averaged under each object's soft map."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attentive_pool(features: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``z_m = sum_ij a_ij z_ij / sum_ij a_ij`` for features ``(B, C, h, w)`` and maps ``(B, M, H, W)``;
    maps are area-resized to the feature grid; an empty map gives a zero vector. Returns ``(B, M, C)``."""
    weights = F.adaptive_avg_pool2d(maps.to(features.dtype), features.shape[-2:]).flatten(2)  # (B, M, hw)
    pooled = weights @ features.flatten(2).transpose(1, 2)  # (B, M, C)
    return pooled / weights.sum(-1, keepdim=True).clamp_min(1e-6)
