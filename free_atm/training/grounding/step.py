"""One training step's losses for a grounding adapter: the denoiser's own loss and the grounding losses
(token and pixel) on the maps the capture processors gather from the same forward pass (no second pass),
on any family."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ...attention import AttentionAggregator, capture_attention
from .loss import grounding_loss, token_columns
from .pixel_loss import pixel_loss


@dataclass
class GroundingLosses:
    """``denoising``: the mean squared error of the denoiser's prediction; ``grounding`` and ``pixel``:
    :func:`grounding_loss` and :func:`pixel_loss` of its captured maps; ``maps``: those maps
    ``(B, T, layers, h, w)``, one column per object token."""

    denoising: torch.Tensor
    grounding: torch.Tensor
    pixel: torch.Tensor
    maps: torch.Tensor


def grounding_losses(
    pipe,
    pixels: torch.Tensor,
    prompts: list[str],
    objects: list[list[str]],
    masks: torch.Tensor,
    timesteps: torch.Tensor,
    generator: torch.Generator | None = None,
    call: dict | None = None,
) -> GroundingLosses:
    """The losses of ``pipe``'s denoiser on images ``pixels`` ``(B, 3, H, W)`` in [-1, 1] with their
    ``prompts``, ``objects`` and masks ``(B, M, H, W)``, each noised to its level in ``timesteps`` (0-1000)
    with noise from ``generator``; ``call`` holds the pipeline call's text settings (SD3 and Flux:
    ``max_sequence_length``). The VAE and text encoders run without gradients; the maps are those of the
    layers the pipeline's capture settings count, at every level (no timestep window)."""
    call = dict(call or {})
    with torch.no_grad():
        latents = pipe._annotation_latents(pixels.to(pipe.device, pipe.vae.dtype))
        conditioning = pipe._annotation_conditioning(prompts, *pixels.shape[-2:], call)
    weights, _ = pipe._object_weights(call, prompts, objects, False)
    columns, owners = token_columns(weights)
    config = replace(pipe.capture_config, keep="layers", timestep_range=None, refinement="none")
    aggregator = AttentionAggregator(columns, config)
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents.device, latents.dtype)
    with capture_attention(pipe.denoiser, aggregator):
        prediction, target = pipe.denoise(latents, noise, timesteps, conditioning)
    maps = aggregator.kept()["layers"]
    masks = masks.to(maps.device)
    return GroundingLosses(
        denoising=F.mse_loss(prediction.float(), target.float()),
        grounding=grounding_loss(maps, masks, owners),
        pixel=pixel_loss(maps, masks, owners),
        maps=maps,
    )
