"""A small Stable Diffusion 3 for the shapes world: the shipped model's VAE and word codes around a
joint-attention transformer (MM-DiT) in place of the UNet.

It exists to measure what the capture reads from joint attention (raw maps against ConceptAttention's
output space) on a model that has learned to draw, against exact truth; no pretrained MM-DiT can be
downloaded here. ``benchmarks/concept_attention_quality.py`` trains it; it is not shipped.

Pitfall: SD3 reads the *penultimate* hidden state of its CLIP encoders (``hidden_states[-2]``). With one
transformer layer that is the word plus position embedding itself, so, as in the shipped model, each
token names only its own word; the layer only shapes the pooled caption vector.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from ...diffusion.stable_diffusion_3 import FreeATMStableDiffusion3Pipeline
from .architecture import default_model_path


def shapes_sd3_text_encoder(words: CLIPTextModel, seed: int) -> CLIPTextModelWithProjection:
    """``words``' embeddings (the shipped encoder's fixed codes) under one frozen random CLIP layer."""
    config = words.config
    torch.manual_seed(seed)
    encoder = CLIPTextModelWithProjection(
        CLIPTextConfig(**{**config.to_diff_dict(), "num_hidden_layers": 1, "projection_dim": config.hidden_size})
    )
    encoder.text_model.embeddings.load_state_dict(words.embeddings.state_dict())
    return encoder.eval().requires_grad_(False)


def shapes_sd3_transformer(width: int = 128, num_layers: int = 4, seed: int = 0) -> SD3Transformer2DModel:
    """An MM-DiT over the 16 x 16 x 8 latents in 2 x 2 patches (64 image tokens), heads of 32 channels."""
    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=8,
        out_channels=8,
        num_layers=num_layers,
        attention_head_dim=32,
        num_attention_heads=width // 32,
        joint_attention_dim=128,  # the two CLIP encoders' 64 channels side by side
        caption_projection_dim=width,
        pooled_projection_dim=128,
        pos_embed_max_size=16,
        qk_norm="rms_norm",
    )


def shapes_sd3_pipeline(transformer: SD3Transformer2DModel | None = None) -> FreeATMStableDiffusion3Pipeline:
    """The pipeline around ``transformer`` (a fresh :func:`shapes_sd3_transformer` if none). No T5: call it
    with ``max_sequence_length=0`` so that the image attends to the 24 CLIP positions only."""
    root = default_model_path()
    vae = AutoencoderKL.from_pretrained(root, subfolder="vae")
    vae.register_to_config(shift_factor=0.0)  # SD3 decodes latents / scaling + shift
    words = CLIPTextModel.from_pretrained(root, subfolder="text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer")
    return FreeATMStableDiffusion3Pipeline(
        transformer=transformer if transformer is not None else shapes_sd3_transformer(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
        vae=vae,
        text_encoder=shapes_sd3_text_encoder(words, seed=1),
        tokenizer=tokenizer,
        text_encoder_2=shapes_sd3_text_encoder(words, seed=2),
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
