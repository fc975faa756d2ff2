"""Settings that decide which cross-attention maps are aggregated and how they become masks."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

THRESHOLD_METHODS = ("fixed", "otsu", "competition")
NORMALIZATIONS = ("joint", "text")
MAP_METHODS = ("attention", "concept")
REFINEMENTS = ("none", "self_attention")
KEEPS = ("none", "layers", "steps", "layers_and_steps")
#: the largest values a run can finish with: maps of 1,024 x 1,024 per object, the self-attention applied
#: 64 times (a map is uniform long before), 100 iterations of pixel refinement (PAMR uses 10)
MAX_ATTENTION_RESOLUTION = 1024
MAX_REFINEMENT_POWER = 64
MAX_PIXEL_REFINEMENT = 100


@dataclass(frozen=True)
class CaptureConfig:
    """How cross-attention maps are captured, aggregated and turned into masks.

    Args:
        attention_resolution: height of the aggregated maps; the width follows the latent aspect ratio.
            ``None`` aggregates at the latent resolution.
        layer_scales: downsampling factors (relative to the latent) of the layers that count, for example
            ``(2, 4)``; ``None`` counts every cross-attention layer (the paper's setting).
        timestep_range: inclusive window ``(low, high)`` of scheduler timesteps (0 = clean image) whose
            maps count; ``None`` counts every step (the paper's setting). Flow-matching models (SD3, Flux)
            use the same 0-1000 scale.
        blocks: for diffusion transformers (SD3, Flux), the indices of the attention blocks that count, in
            forward order (Flux numbers its double-stream blocks first, then its single-stream ones);
            ``None`` counts every block. Transformers have one resolution, so ``layer_scales`` is for UNets.
        normalization: on joint attention (SD3, Flux), ``"joint"`` keeps the probabilities of the model's
            own softmax over image and text keys (a pixel that looks mostly at other pixels puts little mass
            on any word, so it stays dark); ``"text"`` renormalises them over the text keys, as a UNet's
            cross-attention would see them (and then skips the image-key scores). UNets have text keys only.
        method: ``"attention"`` (the query-key probabilities) or ``"concept"`` (ConceptAttention's output
            space: the same softmax over text tokens, with the layer's attention outputs of the image and
            text tokens in place of queries and keys; joint attention only).
        threshold_method: ``"fixed"``, ``"otsu"`` or ``"competition"`` (objects and a background level
            compete per pixel, so instance masks never overlap).
        threshold: the fixed threshold, and the background level of ``"competition"``.
        largest_component: keep only the largest connected component of each mask.
        refinement: ``"none"`` (the aggregated cross-attention) or ``"self_attention"``: the maps are
            propagated along the model's own self-attention, ``S^power @ map`` (Dataset Diffusion), where
            ``S`` is the head-averaged self-attention of the conditional pass, averaged over the chosen
            layers and the same timesteps as the maps (SD3 and Flux: the image-to-image part of each counted
            block's joint softmax).
        refinement_power: how many times the self-attention is applied (a positive int; more spreads a map
            further along what the model sees as one region).
        refinement_scales: downsampling factors of the self-attention layers that count; ``None`` counts
            those with at most 1,024 positions (for SD 1.5 at 512 px the 32x32 and 16x16 layers, and for
            SDXL at 1024 px the 32x32 ones), so the running matrix stays at most 1,024 x 1,024 per image.
        pixel_refinement: iterations of pixel-adaptive refinement of the upsampled maps along the image's
            own colours (PAMR, :mod:`free_atm.pixel_refinement`), after any ``refinement``; ``0`` turns it
            off. It needs the decoded image, so it does not combine with ``output_type="latent"``.
        keep: besides the average, also return each object's maps per counted ``"layers"`` (mean over
            steps), per counted ``"steps"`` (mean over layers; a step is one counted denoiser call), or per
            ``"layers_and_steps"``; raw head-averaged probabilities at the aggregation resolution, before
            normalisation and refinement (:class:`free_atm.diffusion.output.KeptMaps`). Memory grows with
            what is kept; ``"none"`` keeps only the running sums.
    """

    attention_resolution: int | None = None
    layer_scales: tuple[int, ...] | None = None
    timestep_range: tuple[float, float] | None = None
    threshold_method: str = "fixed"
    threshold: float = 0.4
    largest_component: bool = False
    blocks: tuple[int, ...] | None = None
    normalization: str = "joint"
    method: str = "attention"
    refinement: str = "none"
    refinement_power: int = 1
    refinement_scales: tuple[int, ...] | None = None
    pixel_refinement: int = 0
    keep: str = "none"

    def __post_init__(self) -> None:
        resolution = self.attention_resolution
        if resolution is not None and (not _is_int(resolution) or not 0 < resolution <= MAX_ATTENTION_RESOLUTION):
            raise ValueError(
                f"attention_resolution must be an int in [1, {MAX_ATTENTION_RESOLUTION}] or None, got {resolution!r}"
            )
        for name in ("layer_scales", "refinement_scales"):
            if getattr(self, name) is not None:
                scales = tuple(getattr(self, name))
                if not scales or any(not isinstance(s, int) or isinstance(s, bool) or s <= 0 for s in scales):
                    raise ValueError(f"{name} must be positive ints or None, got {getattr(self, name)!r}")
                object.__setattr__(self, name, scales)
        if self.timestep_range is not None:
            window = tuple(self.timestep_range)
            if len(window) != 2 or not all(math.isfinite(w) for w in window) or window[0] > window[1]:
                raise ValueError(
                    "timestep_range must be two finite numbers (low, high) with low <= high, "
                    f"got {self.timestep_range!r}"
                )
            object.__setattr__(self, "timestep_range", window)
        if self.blocks is not None:
            blocks = tuple(self.blocks)
            if not blocks or any(not isinstance(b, int) or b < 0 for b in blocks):
                raise ValueError(f"blocks must be non-negative ints or None, got {self.blocks!r}")
            object.__setattr__(self, "blocks", blocks)
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.method not in MAP_METHODS:
            raise ValueError(f"method must be one of {MAP_METHODS}, got {self.method!r}")
        if self.keep not in KEEPS:
            raise ValueError(f"keep must be one of {KEEPS}, got {self.keep!r}")
        if self.refinement not in REFINEMENTS:
            raise ValueError(f"refinement must be one of {REFINEMENTS}, got {self.refinement!r}")
        power = self.refinement_power
        if not _is_int(power) or not 1 <= power <= MAX_REFINEMENT_POWER:
            raise ValueError(f"refinement_power must be an int in [1, {MAX_REFINEMENT_POWER}], got {power!r}")
        iterations = self.pixel_refinement
        if not _is_int(iterations) or not 0 <= iterations <= MAX_PIXEL_REFINEMENT:
            raise ValueError(f"pixel_refinement must be an int in [0, {MAX_PIXEL_REFINEMENT}], got {iterations!r}")
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
        """This config with ``overrides`` applied (a whole config replaces it); a bad key or value is a
        ``ValueError`` naming it."""
        if overrides is None:
            return self
        if isinstance(overrides, CaptureConfig):
            return overrides
        _check_keys(overrides)
        return replace(self, **overrides)

    @classmethod
    def check_overrides(cls, overrides: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming a key or value of ``overrides`` that no config accepts, before any
        pipeline exists to apply them to."""
        cls().updated(overrides)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_keys(values: dict[str, Any]) -> None:
    unknown = set(values) - {f.name for f in fields(CaptureConfig)}
    if unknown:
        raise ValueError(
            f"unknown capture settings {sorted(unknown)}; known: {[f.name for f in fields(CaptureConfig)]}"
        )
