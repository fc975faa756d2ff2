"""Tiny pipeline components with random weights, built from configs (nothing is downloaded), for tests
and for ``--model tiny-random``: each family's pipeline runs in about a second on a CPU.

Not for real use: the weights are random, so the images are noise and the maps mean nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
)

from .diffusion.clip_tokenizer import clip_tokenizer_from_words
from .diffusion.t5_tokenizer import t5_tokenizer_from_words

DEMO_WORDS = [
    "a",
    "an",
    "the",
    "and",
    "with",
    "in",
    "on",
    "of",
    "is",
    "are",
    "photo",
    "picture",
    "red",
    "green",
    "blue",
    "yellow",
    "orange",
    "purple",
    "white",
    "black",
    "gray",
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "dog",
    "cat",
    "horse",
    "bird",
    "car",
    "bus",
    "boat",
    "tree",
    "flower",
    "girl",
    "boy",
    "teddy",
    "bear",
    "apple",
    "table",
    "chair",
    "park",
    "beach",
    "street",
    "room",
    "field",
    "sky",
    "grass",
    "water",
    "background",
]

SD_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def _tinyclip_text_encoder(hidden_size: int) -> dict:
    """The size of a tiny CLIP text encoder (2 layers, 4 heads)."""
    return dict(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2, num_attention_heads=4)


def clip_text_encoder(
    tokenizer: CLIPTokenizer, size: dict, seed: int, projection_dim: int | None = None, vocab_size: int = 49408
):
    """A CLIP text encoder of ``size`` (with a projection when ``projection_dim`` is given); real models'
    sizes keep CLIP's 49,408-token embedding, tiny ones take ``len(tokenizer)``."""
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=projection_dim or size["hidden_size"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **size,
    )
    return (CLIPTextModelWithProjection if projection_dim else CLIPTextModel)(config).eval()


#: SD3's VAE settings (16 latent channels come with them): no quant convs, its shift and scale
_FLOW_VAE = dict(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)


def _tiny_vae(seed: int, flow: bool = False) -> AutoencoderKL:
    """A two-level VAE: SD's 4-channel latent, or (``flow``) SD3's and Flux's 16 channels with SD3's shift
    and scale and no quant convs."""
    torch.manual_seed(seed)
    config = dict(block_out_channels=(16, 32), latent_channels=4, norm_num_groups=8, sample_size=64)
    if flow:
        config = dict(block_out_channels=(8, 8), latent_channels=16, norm_num_groups=4, sample_size=32, **_FLOW_VAE)
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        **config,
    ).eval()


def t5_text_encoder(tokenizer, d_model: int, seed: int, **config) -> T5EncoderModel:
    """A T5 v1.1 encoder (gated GELU) over ``tokenizer``'s vocabulary."""
    torch.manual_seed(seed)
    t5_config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=config.pop("d_kv", 8),
        d_ff=config.pop("d_ff", 2 * d_model),
        num_layers=config.pop("num_layers", 2),
        num_heads=config.pop("num_heads", 4),
        feed_forward_proj=config.pop("feed_forward_proj", "gated-gelu"),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **config,
    )
    return T5EncoderModel(t5_config).eval()


def tiny_sd_components(
    seed: int = 0, words: Iterable[str] = DEMO_WORDS, upcast_attention: bool = False
) -> dict[str, object]:
    """Components of a tiny SD 1.x pipeline (``upcast_attention=True`` and linear projections: SD 2.x style).

    Cross-attention sits at latent scales 1, 2 and 4 (mid block), so layer selection has something to
    select; the VAE halves the resolution, so a 64 px image has a 32 x 32 latent.
    """
    tokenizer = clip_tokenizer_from_words(words)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4, 4) if upcast_attention else 8,
        norm_num_groups=8,
        upcast_attention=upcast_attention,
        use_linear_projection=upcast_attention,
    ).eval()
    return {
        "unet": unet,
        "vae": _tiny_vae(seed + 1),
        "text_encoder": clip_text_encoder(tokenizer, _tinyclip_text_encoder(32), seed + 2, vocab_size=len(tokenizer)),
        "tokenizer": tokenizer,
        "scheduler": DDIMScheduler(**SD_SCHEDULER),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


def tiny_sdxl_components(seed: int = 0, words: Iterable[str] = DEMO_WORDS) -> dict[str, object]:
    """Components of a tiny SDXL pipeline: two text encoders, ``text_time`` conditioning."""
    words = list(words)
    tokenizer, tokenizer_2 = clip_tokenizer_from_words(words), clip_tokenizer_from_words(words)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64,
        norm_num_groups=8,
    ).eval()
    return {
        "unet": unet,
        "vae": _tiny_vae(seed + 1),
        "text_encoder": clip_text_encoder(tokenizer, _tinyclip_text_encoder(32), seed + 2, vocab_size=len(tokenizer)),
        "text_encoder_2": clip_text_encoder(tokenizer_2, _tinyclip_text_encoder(32), seed + 3, 32, len(tokenizer_2)),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "scheduler": DDIMScheduler(**SD_SCHEDULER),
        "image_encoder": None,
        "feature_extractor": None,
    }


def tiny_sd3_components(seed: int = 0, words: Iterable[str] = DEMO_WORDS) -> dict[str, object]:
    """Components of a tiny SD3 pipeline: an MM-DiT of 2 joint blocks (the last one ``context_pre_only``),
    two CLIP encoders and T5. A 32 px image has a 16 x 16 latent and 8 x 8 image tokens; call it with a
    short ``max_sequence_length`` (32) to keep T5's part of the text sequence small."""
    words = list(words)
    clip_1, clip_2 = clip_tokenizer_from_words(words), clip_tokenizer_from_words(words)
    t5 = t5_tokenizer_from_words(words)
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=32,
        pooled_projection_dim=32,
        pos_embed_max_size=16,
        qk_norm="rms_norm",
    ).eval()
    return {
        "transformer": transformer,
        "vae": _tiny_vae(seed + 1, flow=True),
        "text_encoder": clip_text_encoder(clip_1, _tinyclip_text_encoder(16), seed + 2, 16, len(clip_1)),
        "text_encoder_2": clip_text_encoder(clip_2, _tinyclip_text_encoder(16), seed + 3, 16, len(clip_2)),
        "text_encoder_3": t5_text_encoder(t5, 64, seed + 4),
        "tokenizer": clip_1,
        "tokenizer_2": clip_2,
        "tokenizer_3": t5,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
        "image_encoder": None,
        "feature_extractor": None,
    }


def tiny_flux_components(seed: int = 0, words: Iterable[str] = DEMO_WORDS) -> dict[str, object]:
    """Components of a tiny Flux pipeline: one double-stream and two single-stream blocks, CLIP for the
    pooled vector and T5 for the tokens. A 32 px image packs into 8 x 8 image tokens; call it with a short
    ``max_sequence_length`` (24)."""
    words = list(words)
    clip, t5 = clip_tokenizer_from_words(words), t5_tokenizer_from_words(words)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 4, 8),
    ).eval()
    return {
        "transformer": transformer,
        "vae": _tiny_vae(seed + 1, flow=True),
        "text_encoder": clip_text_encoder(clip, _tinyclip_text_encoder(32), seed + 2, vocab_size=len(clip)),
        "text_encoder_2": t5_text_encoder(t5, 32, seed + 3),
        "tokenizer": clip,
        "tokenizer_2": t5,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
        "image_encoder": None,
        "feature_extractor": None,
    }
