"""Output dataclasses: the parents' outputs plus the objects, maps, masks and boxes of every image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from diffusers.pipelines.flux import FluxPipelineOutput
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
from diffusers.pipelines.stable_diffusion_3 import StableDiffusion3PipelineOutput
from diffusers.pipelines.stable_diffusion_xl import StableDiffusionXLPipelineOutput
from diffusers.utils import BaseOutput


@dataclass
class KeptMaps:
    """One image's maps per layer and per step (``CaptureConfig(keep=...)``): raw head-averaged attention at
    the aggregation resolution, before normalisation and refinement; ``None`` where not kept.

    ``layers`` ``(M, L, h, w)``: each counted layer (in forward order) averaged over the counted steps;
    ``steps`` ``(M, S, h, w)``: each counted step (a denoiser call) averaged over the counted layers, its
    timestep in ``timesteps``; ``layers_and_steps`` ``(M, S, L, h, w)``. The mean of any of them is the
    image's map before it is normalised into ``attention_maps``."""

    timesteps: list[float]
    layers: np.ndarray | None = None
    steps: np.ndarray | None = None
    layers_and_steps: np.ndarray | None = None


@dataclass
class MaskFields:
    """Per image: ``objects`` (phrases, in mask order), ``attention_maps`` float ``(M, h, w)`` in [0, 1],
    ``masks`` bool ``(M, H, W)`` at image resolution, ``boxes`` float ``(M, 4)`` xyxy pixels (NaN row
    for an empty mask), ``confidence`` float ``(M,)`` in [0, 1], how much each mask is worth
    (:func:`free_atm.confidence.mask_confidence`); with ``CaptureConfig(keep=...)`` also ``kept_maps``
    (:class:`KeptMaps`)."""

    objects: list[list[str]] | None = None
    attention_maps: list[np.ndarray] | None = None
    masks: list[np.ndarray] | None = None
    boxes: list[np.ndarray] | None = None
    confidence: list[np.ndarray] | None = None
    kept_maps: list[KeptMaps] | None = None


@dataclass
class FreeATMStableDiffusionPipelineOutput(MaskFields, StableDiffusionPipelineOutput):
    """``StableDiffusionPipelineOutput`` (images, nsfw_content_detected) plus :class:`MaskFields`."""


@dataclass
class FreeATMStableDiffusionXLPipelineOutput(MaskFields, StableDiffusionXLPipelineOutput):
    """``StableDiffusionXLPipelineOutput`` (images) plus :class:`MaskFields`."""


@dataclass
class FreeATMStableDiffusion3PipelineOutput(MaskFields, StableDiffusion3PipelineOutput):
    """``StableDiffusion3PipelineOutput`` (images) plus :class:`MaskFields`."""


@dataclass
class FreeATMFluxPipelineOutput(MaskFields, FluxPipelineOutput):
    """``FluxPipelineOutput`` (images) plus :class:`MaskFields`."""


@dataclass
class FreeATMAnnotationOutput(MaskFields, BaseOutput):
    """What ``annotate`` finds in existing images: :class:`MaskFields` only."""
