"""Settings that decide which cross-attention maps are aggregated and how they become masks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

THRESHOLD_METHODS = ("fixed", "otsu", "competition")


@dataclass(frozen=True)
class CaptureConfig:
    """How cross-attention maps are captured, aggregated and turned into masks.

    Args:
        attention_resolution: height of the aggregated maps; the width follows the latent aspect ratio.
            ``None`` aggregates at the latent resolution.
        layer_scales: downsampling factors (relative to the latent) of the layers that count, for example
            ``(2, 4)``; ``None`` counts every cross-attention layer (the paper's setting).
        timestep_range: inclusive window ``(low, high)`` of scheduler timesteps (0 = clean image) whose
            maps count; ``None`` counts every step (the paper's setting).
        threshold_method: ``"fixed"``, ``"otsu"`` or ``"competition"`` (objects and a background level
            compete per pixel, so instance masks never overlap).
        threshold: the fixed threshold, and the background level of ``"competition"``.
        largest_component: keep only the largest connected component of each mask.
    """

    attention_resolution: int | None = None
    layer_scales: tuple[int, ...] | None = None
    timestep_range: tuple[float, float] | None = None
    threshold_method: str = "fixed"
    threshold: float = 0.4
    largest_component: bool = False

    def __post_init__(self) -> None:
        if self.attention_resolution is not None and (
            not isinstance(self.attention_resolution, int) or self.attention_resolution <= 0
        ):
            raise ValueError(f"attention_resolution must be a positive int or None, got {self.attention_resolution!r}")
        if self.layer_scales is not None:
            scales = tuple(self.layer_scales)
            if not scales or any(not isinstance(s, int) or s <= 0 for s in scales):
                raise ValueError(f"layer_scales must be positive ints or None, got {self.layer_scales!r}")
            object.__setattr__(self, "layer_scales", scales)
        if self.timestep_range is not None:
            window = tuple(self.timestep_range)
            if len(window) != 2 or window[0] > window[1]:
                raise ValueError(f"timestep_range must be (low, high) with low <= high, got {self.timestep_range!r}")
            object.__setattr__(self, "timestep_range", window)
        if self.threshold_method not in THRESHOLD_METHODS:
            raise ValueError(f"threshold_method must be one of {THRESHOLD_METHODS}, got {self.threshold_method!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {self.threshold!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> CaptureConfig:
        """Build from a dict; unknown keys are an error naming them."""
        values = dict(values or {})
        _check_keys(values)
        return cls(**values)

    def updated(self, overrides: CaptureConfig | dict[str, Any] | None) -> CaptureConfig:
        """This config with ``overrides`` applied (a whole config replaces it)."""
        if overrides is None:
            return self
        if isinstance(overrides, CaptureConfig):
            return overrides
        _check_keys(overrides)
        return replace(self, **overrides)


def _check_keys(values: dict[str, Any]) -> None:
    unknown = set(values) - {f.name for f in fields(CaptureConfig)}
    if unknown:
        raise ValueError(
            f"unknown capture settings {sorted(unknown)}; known: {[f.name for f in fields(CaptureConfig)]}"
        )
