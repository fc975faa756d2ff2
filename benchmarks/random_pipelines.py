"""The real architectures of SD 1.5, SDXL, SD3 and Flux with random weights, built from configs (nothing is
downloaded), for the benchmarks' timing and memory figures; the transformers' depth can be cut to fit a
small machine."""

from __future__ import annotations

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
    CLIPTokenizer,
)

from free_atm.diffusion.clip_tokenizer import clip_tokenizer_from_words
from free_atm.diffusion.t5_tokenizer import t5_tokenizer_from_words
from free_atm.testing import DEMO_WORDS, SD_SCHEDULER, clip_text_encoder, t5_text_encoder

#: text-encoder sizes of the real models: CLIP ViT-L/14, OpenCLIP ViT-bigG/14, T5 v1.1 XXL (layers given apart)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              hidden_act="quick_gelu")  # fmt: skip
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              hidden_act="gelu")  # fmt: skip
T5_XXL = dict(d_model=4096, d_kv=64, d_ff=10240, num_heads=64)


def _sd_vae(seed: int, latent_channels: int = 4, **config) -> AutoencoderKL:
    """The Stable Diffusion VAE (4 latent channels; SD3 and Flux: 16, no quant convs, shift and scale)."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels,
        layers_per_block=2,
        sample_size=512,
        **config,
    ).eval()


def sd15_components(seed: int = 0, tokenizer: CLIPTokenizer | None = None) -> dict[str, object]:
    """The Stable Diffusion 1.5 architecture (UNet, CLIP ViT-L/14 text encoder, SD VAE), random weights.

    The text encoder has CLIP's 49,408-token embedding whatever ``tokenizer`` is used.
    """
    tokenizer = tokenizer or clip_tokenizer_from_words(DEMO_WORDS)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8).eval()
    return {
        "unet": unet,
        "vae": _sd_vae(seed + 1),
        "text_encoder": clip_text_encoder(tokenizer, CLIP_L, seed + 2),
        "tokenizer": tokenizer,
        "scheduler": DDIMScheduler(**SD_SCHEDULER),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


def sdxl_components(seed: int = 0) -> dict[str, object]:
    """The SDXL base architecture (UNet, CLIP ViT-L and bigG text encoders, VAE), random weights."""
    tokenizer, tokenizer_2 = clip_tokenizer_from_words(DEMO_WORDS), clip_tokenizer_from_words(DEMO_WORDS)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=128,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(5, 10, 20),
        transformer_layers_per_block=(1, 2, 10),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    ).eval()
    return {
        "unet": unet,
        "vae": _sd_vae(seed + 1, scaling_factor=0.13025),
        "text_encoder": clip_text_encoder(tokenizer, CLIP_L, seed + 2),
        "text_encoder_2": clip_text_encoder(tokenizer_2, CLIP_G, seed + 3, projection_dim=1280),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "scheduler": DDIMScheduler(**SD_SCHEDULER),
        "image_encoder": None,
        "feature_extractor": None,
    }


def sd3_components(seed: int = 0, num_layers: int = 24, t5_layers: int = 24) -> dict[str, object]:
    """The SD 3.5 Medium-style architecture at full width (MM-DiT of 1536 channels with q/k RMS norms,
    CLIP-L, CLIP-G, T5-XXL, the 16-channel VAE), random weights; ``num_layers`` and ``t5_layers`` cut the
    depth to fit a small machine."""
    clip_1, clip_2 = clip_tokenizer_from_words(DEMO_WORDS), clip_tokenizer_from_words(DEMO_WORDS)
    t5 = t5_tokenizer_from_words(DEMO_WORDS)
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=128,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=num_layers,
        attention_head_dim=64,
        num_attention_heads=24,
        joint_attention_dim=4096,
        caption_projection_dim=1536,
        pooled_projection_dim=2048,
        pos_embed_max_size=192,
        qk_norm="rms_norm",
    ).eval()
    return {
        "transformer": transformer,
        "vae": _sd_vae(
            seed + 1, 16, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035
        ),  # fmt: skip
        "text_encoder": clip_text_encoder(clip_1, CLIP_L, seed + 2, projection_dim=768),
        "text_encoder_2": clip_text_encoder(clip_2, CLIP_G, seed + 3, projection_dim=1280),
        "text_encoder_3": t5_text_encoder(t5, seed=seed + 4, num_layers=t5_layers, **T5_XXL),
        "tokenizer": clip_1,
        "tokenizer_2": clip_2,
        "tokenizer_3": t5,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
        "image_encoder": None,
        "feature_extractor": None,
    }


def flux_components(
    seed: int = 0, num_layers: int = 19, num_single_layers: int = 38, t5_layers: int = 24
) -> dict[str, object]:
    """The FLUX.1-dev architecture at full width (3072 channels, guidance embedding, CLIP-L, T5-XXL, the
    16-channel VAE), random weights; the depths can be cut to fit a small machine."""
    clip, t5 = clip_tokenizer_from_words(DEMO_WORDS), t5_tokenizer_from_words(DEMO_WORDS)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=num_layers,
        num_single_layers=num_single_layers,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=4096,
        pooled_projection_dim=768,
        guidance_embeds=True,
        axes_dims_rope=(16, 56, 56),
    ).eval()
    return {
        "transformer": transformer,
        "vae": _sd_vae(
            seed + 1, 16, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611
        ),  # fmt: skip
        "text_encoder": clip_text_encoder(clip, CLIP_L, seed + 2),
        "text_encoder_2": t5_text_encoder(t5, seed=seed + 3, num_layers=t5_layers, **T5_XXL),
        "tokenizer": clip,
        "tokenizer_2": t5,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
        "image_encoder": None,
        "feature_extractor": None,
    }
