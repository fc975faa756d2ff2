"""A feature extractor for any diffusers pipeline: the shipped ``shapes`` model, a folder or a Hub id.

Text-to-image pipelines (Stable Diffusion 1.x/2.x, SDXL, the shapes model) are read text-free, with the
empty prompt's conditioning (SDXL's pooled embedding and size ids included); unconditional pipelines (a
``UNet2DModel`` with DDPM's scheduler, a latent diffusion model) as they are. Noise follows the model's
training schedule (``DDPMScheduler`` from its scheduler's config).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import DDPMScheduler, DiffusionPipeline

from ..models import NAMED_MODELS, check_model_reference, load_pipeline
from .extractor import DiffusionFeatureExtractor


def _empty_prompt_conditioning(pipe, image_size: int) -> dict:
    """The U-Net's conditioning for the empty prompt, batch size 1."""
    device = pipe.unet.device
    encoded = pipe.encode_prompt("", device=device, num_images_per_prompt=1, do_classifier_free_guidance=False)
    if len(encoded) == 2:  # Stable Diffusion 1.x/2.x: (prompt_embeds, negative)
        return {"encoder_hidden_states": encoded[0]}
    embeds, _, pooled, _ = encoded  # SDXL
    size = (image_size, image_size)
    projection = pipe.text_encoder_2.config.projection_dim
    time_ids = pipe._get_add_time_ids(size, (0, 0), size, embeds.dtype, text_encoder_projection_dim=projection)
    return {"encoder_hidden_states": embeds, "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}


def load_feature_extractor(
    model: str,
    blocks: Sequence[str],
    timesteps: Sequence[int],
    noise_seed: int = 0,
    noise_draws: int = 1,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> DiffusionFeatureExtractor:
    """The U-Net of ``model`` read at ``blocks`` and noise levels ``timesteps`` (see
    :class:`DiffusionFeatureExtractor`), on ``device``; ``image_size`` defaults to the model's."""
    check_model_reference(model)
    if model not in NAMED_MODELS and DiffusionPipeline.load_config(model).get("text_encoder", [None])[0] is None:
        pipe = DiffusionPipeline.from_pretrained(model, dtype=dtype).to(device)  # unconditional
        conditioning = {}
    else:
        pipe = load_pipeline(model, device, dtype)
        conditioning = None
    vae = getattr(pipe, "vae", None) or getattr(pipe, "vqvae", None)
    scale = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
    size = image_size or pipe.unet.config.sample_size * scale
    if conditioning is None:
        with torch.no_grad():
            conditioning = _empty_prompt_conditioning(pipe, size)
    return DiffusionFeatureExtractor(
        pipe.unet,
        DDPMScheduler.from_config(pipe.scheduler.config),
        blocks,
        timesteps,
        vae=vae,
        conditioning=conditioning,
        noise_seed=noise_seed,
        noise_draws=noise_draws,
        sample_size=size,
    )
