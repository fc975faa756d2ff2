"""A grounding adapter: LoRA (peft) on the attention projections whose maps the capture reads, saved in
diffusers' LoRA format, so that a stock pipeline loads it with ``pipe.load_lora_weights(folder)``.

The adapted layers are the cross-attention layers of a UNet (SD 1.x/2.x, SDXL) and the joint-attention
blocks of a diffusion transformer (SD3, Flux), optionally only some ``blocks`` of them. Their query and
key projections make the maps; the value and output projections let the denoiser keep its images while
the maps move.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file

#: the file diffusers' LoRA loaders read
ADAPTER_FILE = "pytorch_lora_weights.safetensors"

#: the projections adapted in each attention layer: UNet cross-attention, and MM-DiT joint attention
UNET_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
JOINT_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


def attention_layers(denoiser) -> list[str]:
    """The names of the attention modules whose maps the capture reads, in order: a UNet's cross-attention
    layers, a transformer's joint-attention blocks (``transformer_blocks.{i}.attn``)."""
    if hasattr(denoiser, "transformer_blocks"):
        return [f"transformer_blocks.{i}.attn" for i in range(len(denoiser.transformer_blocks))]
    return [
        name
        for name, module in denoiser.named_modules()
        if type(module).__name__ == "Attention" and getattr(module, "is_cross_attention", False)
    ]


def adapter_targets(denoiser, blocks: Sequence[int] | None = None) -> list[str]:
    """The projection modules a grounding adapter adapts: every one of :func:`attention_layers`, or only
    those of ``blocks`` (indices into that list); ``ValueError`` for an index the model lacks."""
    layers = attention_layers(denoiser)
    if blocks is not None:
        missing = [b for b in blocks if not 0 <= b < len(layers)]
        if missing or not blocks:
            raise ValueError(
                f"--blocks {list(blocks)}: the capture reads this model's attention blocks 0 to {len(layers) - 1}"
            )
        layers = [layers[b] for b in sorted(set(blocks))]
    projections = JOINT_PROJECTIONS if hasattr(denoiser, "transformer_blocks") else UNET_PROJECTIONS
    modules = dict(denoiser.named_modules())
    return [f"{layer}.{p}" for layer in layers for p in projections if f"{layer}.{p}" in modules]


def add_grounding_adapter(pipe, rank: int, alpha: float, blocks: Sequence[int] | None = None) -> int:
    """Add a LoRA of ``rank`` and ``alpha`` to ``pipe``'s denoiser on :func:`adapter_targets`; the base
    weights are frozen. Returns the number of trainable parameters."""
    if rank < 1:
        raise ValueError(f"--rank must be at least 1, got {rank}")
    denoiser = pipe.denoiser
    targets = adapter_targets(denoiser, blocks)
    denoiser.requires_grad_(False)
    denoiser.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=targets))
    return sum(p.numel() for p in denoiser.parameters() if p.requires_grad)


def _owner(pipe) -> str:
    """The name of ``pipe``'s denoiser, which prefixes its keys in a LoRA file: ``transformer`` or ``unet``."""
    return "transformer" if pipe.denoiser is getattr(pipe, "transformer", None) else "unet"


def save_grounding_adapter(pipe, folder: str | Path) -> None:
    """Write ``pipe``'s adapter into ``folder`` in diffusers' LoRA format
    (``pytorch_lora_weights.safetensors``), which ``load_lora_weights`` of a stock pipeline reads."""
    from diffusers.utils import convert_state_dict_to_diffusers

    layers = get_peft_model_state_dict(pipe.denoiser)
    if _owner(pipe) == "transformer":  # transformers' loaders read peft's names as they are
        pipe.save_lora_weights(folder, transformer_lora_layers=layers)
    else:  # UNet loaders read diffusers' names (lora.down / lora.up)
        pipe.save_lora_weights(folder, unet_lora_layers=convert_state_dict_to_diffusers(layers))


def load_grounding_adapter_weights(pipe, folder: str | Path) -> None:
    """Put the weights of an adapter saved by :func:`save_grounding_adapter` into the adapter that
    :func:`add_grounding_adapter` made on ``pipe`` (same targets and rank): how a training run resumes, with
    its optimiser still holding these parameters."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    owner = _owner(pipe)
    state = {key.removeprefix(f"{owner}."): value for key, value in load_file(Path(folder) / ADAPTER_FILE).items()}
    if owner == "unet":
        state = convert_unet_state_dict_to_peft(state)
    result = set_peft_model_state_dict(pipe.denoiser, state, adapter_name="default")
    missing = [key for key in result.missing_keys if "lora_" in key]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{Path(folder) / ADAPTER_FILE} does not fit this adapter (missing {missing[:3]}, unexpected "
            f"{list(result.unexpected_keys)[:3]}); resume with the settings it was trained with"
        )
