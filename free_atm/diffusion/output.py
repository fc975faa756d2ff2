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
    image's map before it is normalised into ``attention_maps``. ``layer_scales`` (UNets, where layers are
    kept) gives each layer's downsampling factor from the latent as ``CaptureConfig.layer_scales`` counts
    it (1: the latent's own grid), so that the layers of any scales can be averaged afterwards; on SD3 and
    Flux the kept layers are the counted blocks in order."""

    timesteps: list[float]
    layers: np.ndarray | None = None
    steps: np.ndarray | None = None
    layers_and_steps: np.ndarray | None = None
    layer_scales: list[int] | None = None

    def average(
        self, layer_scales: tuple[int, ...] | None = None, timestep_range: tuple[float, float] | None = None
    ) -> np.ndarray:
        """The mean map ``(M, h, w)`` over the kept layers of ``layer_scales`` and the kept steps within
        ``timestep_range`` (``None``: all): what a capture with those settings aggregates, before it is
        normalised, so that one generation kept whole answers every such setting."""
        by_layer, by_step = layer_scales is not None, timestep_range is not None
        # each kept array with its (step axis, layer axis); every one averages to the same whole map
        kept = [(self.layers_and_steps, 1, 2), (self.layers, None, 1), (self.steps, 1, None)]
        usable = [k for k in kept if k[0] is not None and (k[2] or not by_layer) and (k[1] or not by_step)]
        if not usable:
            raise ValueError(
                f"averaging over layer_scales={layer_scales} and timestep_range={timestep_range} needs maps kept "
                "per layer and step: capture with keep='layers_and_steps'"
            )
        maps, step_axis, layer_axis = usable[-1]
        if by_layer:
            if self.layer_scales is None:
                raise ValueError("layer_scales select UNet layers; these maps carry no layer scales")
            maps = np.compress(np.isin(self.layer_scales, layer_scales), maps, axis=layer_axis)
        if by_step:
            low, high = timestep_range
            maps = np.compress([low <= t <= high for t in self.timesteps], maps, axis=step_axis)
        if 0 in maps.shape[1:-2]:
            raise ValueError(
                f"no kept layer or step matches layer_scales={layer_scales} within timestep_range={timestep_range}"
            )
        return maps.reshape(maps.shape[0], -1, *maps.shape[-2:]).mean(1)


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
