"""Architecture of the small default text-to-image model trained on the shapes world, and where it ships."""

from __future__ import annotations

from importlib import resources

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ...diffusion.clip_tokenizer import clip_tokenizer_from_words
from ...prompts import ObjectPrompt
from ...seeds import derive_seed
from ...world.render import BACKGROUNDS, COLOURS, SHAPES, render_scene

LATENT_CHANNELS = 8
VOCABULARY = ("a", "an", "and", "on", "background", *COLOURS, *SHAPES, *BACKGROUNDS)
_NOISE_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def default_model_path() -> str:
    """The folder of the shipped default pipeline (inside the installed package)."""
    return str(resources.files("free_atm.models.shapes") / "default_model")


def shapes_vocabulary() -> list[str]:
    """The object phrases of the shapes world ("red circle", ...), looked for in prompts that name none."""
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def shapes_prompt(seed: int, index: int) -> ObjectPrompt:
    """The prompt of sample ``index``: the caption of the shapes-world scene of that sample's seed."""
    scene = render_scene(derive_seed(seed, index))
    return ObjectPrompt(scene.caption, scene.objects)


#: captions have at most 18 tokens; a short context keeps training on a CPU affordable
MAX_TOKENS = 24


def shapes_tokenizer() -> CLIPTokenizer:
    return clip_tokenizer_from_words(VOCABULARY, model_max_length=MAX_TOKENS)


def shapes_text_encoder(tokenizer: CLIPTokenizer, seed: int = 0) -> CLIPTextModel:
    """A ``CLIPTextModel`` without transformer layers: word plus position embedding, then layer norm.

    Each token's hidden state then names only its own word, so a word's meaning reaches the image only
    through its own cross-attention column. (With causal layers every later token, padding included,
    carries the whole caption.) On its own this is not enough for a small model to localise; the
    training script adds a grounding loss (:mod:`free_atm.models.shapes.grounding`).

    Pitfall: the word embeddings are fixed random codes of unit variance (the trainer freezes them, as
    Stable Diffusion's UNet reads a frozen CLIP), and positions are 4 times weaker. With the usual
    learned embeddings of std 0.02 the five shape words stayed within 2 of one another (colours 12
    apart) after 7,000 steps: the UNet never learned the kinds because it could not tell them apart,
    and the words never moved apart because the UNet did not use them; every kind drew the same blob.
    """
    model = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=0,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 1.0, generator=generator)
        model.embeddings.position_embedding.weight.normal_(0.0, 0.25, generator=generator)
    return model


def shapes_vae() -> AutoencoderKL:
    """64 px images to 16 x 16 x 8 latents.

    The widths and the 8 latent channels are what the shapes' kinds need: with (16, 32, 32) and 4
    channels the judge recognised only 26% of reconstructed scenes, with (32, 64, 64) and 4 channels 25%
    (small stars, crosses and triangles came back as blobs), which capped every generated image.
    """
    return AutoencoderKL(
        block_out_channels=(32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=LATENT_CHANNELS,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        mid_block_add_attention=False,
    )


def shapes_unet(
    block_out_channels: tuple[int, ...] = (48, 96, 96), self_attention: bool = False
) -> UNet2DConditionModel:
    """Cross-attention at latent scales 1 and 2 (down and up) and 4 (mid).

    By default every attention layer attends to the text alone (``only_cross_attention``): without
    self-attention a training step on a CPU costs a third. ``self_attention`` adds it back (each
    transformer block then attends to the image, then the text), which a GPU pays for easily.
    """
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=16,
        norm_num_groups=16,
        only_cross_attention=not self_attention,
    )


def with_self_attention(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """A copy of a shapes UNet without self-attention that has it, for training on from trained weights.

    Each transformer block of a UNet built with ``only_cross_attention`` attends to the text twice
    (``attn1`` and ``attn2``); with self-attention ``attn1`` attends to the image instead. The copy keeps
    every weight but the first text attention's, and its new self-attention starts with a zero output
    projection, so each block starts as the old block without its first text attention.
    """
    if not unet.config.only_cross_attention:
        raise ValueError("the UNet already has self-attention")
    expanded = shapes_unet(unet.config.block_out_channels, self_attention=True)
    state = {k: v for k, v in unet.state_dict().items() if ".attn1." not in k}
    missing, unexpected = expanded.load_state_dict(state, strict=False)
    assert not unexpected and all(".attn1." in k for k in missing), (missing, unexpected)
    with torch.no_grad():
        for name, module in expanded.named_modules():
            if name.endswith(".attn1"):
                module.to_out[0].weight.zero_()
                module.to_out[0].bias.zero_()
    return expanded


def training_scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    return DDPMScheduler(**_NOISE_SCHEDULE, prediction_type=prediction_type)


def inference_scheduler(prediction_type: str = "epsilon") -> DDIMScheduler:
    return DDIMScheduler(
        **_NOISE_SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type
    )
