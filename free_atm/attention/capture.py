"""Install capture processors on a denoiser's attention layers for one call, then restore them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .aggregator import AttentionAggregator
from .concepts import ConceptStream
from .joint_processor import (
    FluxAttentionCaptureProcessor,
    JointAttentionCaptureProcessor,
    SD3AttentionCaptureProcessor,
    TransformerCall,
)
from .processor import AttentionCaptureProcessor
from .refinement import SelfAttentionAggregator
from .self_attention import SelfAttentionCaptureProcessor, unet_layer_scales

#: joint-attention capture processor of each transformer class
JOINT_CAPTURE_PROCESSORS: dict[str, type[JointAttentionCaptureProcessor]] = {
    "SD3Transformer2DModel": SD3AttentionCaptureProcessor,
    "FluxTransformer2DModel": FluxAttentionCaptureProcessor,
}


#: the latent cells per side of one token of SD3 (``patch_size``) and Flux (packing)
TOKEN_PATCH = 2


def _timestep_value(timestep) -> float:
    return float(timestep.flatten()[0]) if torch.is_tensor(timestep) else float(timestep)


def _on_unet_call(aggregator: AttentionAggregator):
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        aggregator.start_call(tuple(sample.shape[-2:]), _timestep_value(timestep))

    return hook


def cross_attention_processor_names(unet: torch.nn.Module) -> list[str]:
    """Names (as in ``unet.attn_processors``) of the processors of cross-attention layers."""
    names = []
    for name in unet.attn_processors:
        module = unet.get_submodule(name.removesuffix(".processor"))
        if getattr(module, "is_cross_attention", False):
            names.append(name)
    return names


@contextmanager
def capture_cross_attention(unet: torch.nn.Module, aggregator: AttentionAggregator) -> Iterator[AttentionAggregator]:
    """Route every cross-attention layer of ``unet`` through a capture processor for the ``with`` block.

    Self-attention keeps its processor; each cross-attention processor is wrapped, so its output is
    unchanged. On exit the wrapped processors are put back. If something replaced one of ours during the
    block (attention slicing, xformers), that processor is left in place and ``RuntimeError`` is raised,
    since the maps would silently miss those layers.
    """
    config = aggregator.config
    if config.blocks is not None or config.method != "attention":
        raise ValueError(
            f"blocks={config.blocks!r} and method={config.method!r} are for diffusion transformers; a UNet's "
            "cross-attention layers are chosen with layer_scales and give query-key maps (method='attention')"
        )
    processors = unet.attn_processors
    wrappers = {
        name: AttentionCaptureProcessor(processors[name], aggregator) for name in cross_attention_processor_names(unet)
    }
    if not wrappers:
        raise ValueError(f"{type(unet).__name__} has no cross-attention layer to capture")
    if config.refinement == "self_attention":
        wrappers.update(self_attention_wrappers(unet, aggregator))
    with _installed(unet, wrappers, _on_unet_call(aggregator)):
        yield aggregator


def self_attention_wrappers(unet: torch.nn.Module, aggregator: AttentionAggregator) -> dict[str, Any]:
    """Capture processors for the self-attention layers of ``unet``, feeding a running self-attention
    sum that ``aggregator`` refines its maps with."""
    scales = unet_layer_scales(unet, cross=False) if hasattr(unet, "down_blocks") else {}
    if not scales:
        raise ValueError(
            f"refinement='self_attention' needs self-attention layers; this {type(unet).__name__} has none "
            "(its transformer blocks attend to the text only). Use refinement='none'."
        )
    aggregator.self_attention = SelfAttentionAggregator(aggregator.num_images, aggregator.config, set(scales.values()))
    processors = unet.attn_processors
    return {
        name: SelfAttentionCaptureProcessor(processors[name], aggregator.self_attention, scale)
        for name, scale in scales.items()
    }


def joint_attention_processor_names(transformer: torch.nn.Module) -> list[str]:
    """Names of the processors of a diffusion transformer's joint-attention layers, in forward order (the
    order of their block indices in ``CaptureConfig.blocks``)."""
    capture = JOINT_CAPTURE_PROCESSORS[type(transformer).__name__]
    return [
        name
        for name in transformer.attn_processors
        if capture.captures(name, transformer.get_submodule(name.removesuffix(".processor")))
    ]


def _on_transformer_call(aggregator: AttentionAggregator, call: TransformerCall, flux: bool):
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        timestep = _timestep_value(kwargs["timestep"])
        if flux:  # packed 2x2 latent patches, positions in img_ids; the pipeline passes timestep / 1000
            ids = kwargs["img_ids"]
            latent_size = (2 * (int(ids[..., 1].max()) + 1), 2 * (int(ids[..., 2].max()) + 1))
            timestep *= 1000
            call.text_length = kwargs["encoder_hidden_states"].shape[1]
        else:
            latent_size = tuple(kwargs["hidden_states"].shape[-2:])
        aggregator.start_call(latent_size, timestep, first_per_timestep=True)
        if aggregator.concepts is not None:
            active = aggregator.active and aggregator.token_weights.shape[-1] > 0
            aggregator.concepts.start(module.context_embedder, aggregator.num_images, active)

    return hook


def _on_block_call(concepts: ConceptStream, num_images: int):
    """A transformer block's forward pre-hook: the block's conditioning (conditional half) and rotary embedding,
    which the concept tokens run through with the text."""

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        temb = kwargs["temb"] if "temb" in kwargs else args[2]
        concepts.temb = temb[-num_images:]
        concepts.rotary = kwargs.get("image_rotary_emb", args[3] if len(args) > 3 else None)

    return hook


@contextmanager
def capture_joint_attention(
    transformer: torch.nn.Module, aggregator: AttentionAggregator
) -> Iterator[AttentionAggregator]:
    """Route the joint-attention layers of an SD3 or Flux transformer through capture processors for the
    ``with`` block; as :func:`capture_cross_attention` otherwise. Only the first transformer call of each
    timestep counts (see :meth:`AttentionAggregator.start_call`)."""
    family = type(transformer).__name__
    if family not in JOINT_CAPTURE_PROCESSORS:
        raise ValueError(f"no joint-attention capture for {family}; known: {sorted(JOINT_CAPTURE_PROCESSORS)}")
    config = aggregator.config
    if config.refinement == "self_attention":
        if config.method != "attention" or config.refinement_scales is not None:
            raise ValueError(
                "refinement on SD3 and Flux reads the image-to-image part of each counted block's own softmax: it "
                f"needs method='attention' (got {config.method!r}) and takes its blocks from `blocks`, not "
                f"refinement_scales (got {config.refinement_scales!r})"
            )
        # every block attends over one token grid: 2 x 2 latent patches (SD3's patch size, Flux's packing)
        aggregator.self_attention = SelfAttentionAggregator(aggregator.num_images, config, {TOKEN_PATCH})
    if config.layer_scales is not None:
        raise ValueError(
            f"layer_scales={config.layer_scales!r} selects UNet layers by resolution; a diffusion transformer has "
            "one resolution: choose its layers with blocks"
        )
    names = joint_attention_processor_names(transformer)
    outside = sorted(set(config.blocks or ()) - set(range(len(names))))
    if outside:
        raise ValueError(f"blocks {outside} do not exist: {family} has joint-attention blocks 0-{len(names) - 1}")
    processors, call = transformer.attn_processors, TransformerCall()
    capture = JOINT_CAPTURE_PROCESSORS[family]
    blocks = [transformer.get_submodule(name.removesuffix(".processor").rsplit(".", 1)[0]) for name in names]
    wrappers = {
        name: capture(processors[name], aggregator, index, call, blocks[index]) for index, name in enumerate(names)
    }
    hooks = []
    if aggregator.attribution is not None:  # words the prompts lack: concept tokens through every block
        attribution = aggregator.attribution
        states = torch.cat([attribution.states[a, columns] for a, columns in enumerate(attribution.columns)])
        aggregator.concepts = ConceptStream(states)
        hook = _on_block_call(aggregator.concepts, aggregator.num_images)
        hooks = [block.register_forward_pre_hook(hook, with_kwargs=True) for block in blocks]
    try:
        with _installed(transformer, wrappers, _on_transformer_call(aggregator, call, family.startswith("Flux"))):
            yield aggregator
    finally:
        for handle in hooks:
            handle.remove()


@contextmanager
def capture_attention(denoiser: torch.nn.Module, aggregator: AttentionAggregator) -> Iterator[AttentionAggregator]:
    """:func:`capture_joint_attention` for SD3 and Flux transformers, :func:`capture_cross_attention` for UNets."""
    if type(denoiser).__name__ in JOINT_CAPTURE_PROCESSORS:
        with capture_joint_attention(denoiser, aggregator):
            yield aggregator
    else:
        with capture_cross_attention(denoiser, aggregator):
            yield aggregator


@contextmanager
def _installed(model: torch.nn.Module, wrappers: dict[str, Any], pre_hook) -> Iterator[None]:
    """Set ``wrappers`` (processor name -> capture processor) and the forward pre-hook for the block, then
    put the wrapped processors back; raise if something replaced one of ours meanwhile."""
    originals = model.attn_processors
    model.set_attn_processor({**originals, **wrappers})
    hook = model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield
    finally:
        hook.remove()
        current = model.attn_processors
        replaced = sorted(name for name, wrapper in wrappers.items() if current[name] is not wrapper)
        model.set_attn_processor(
            {
                name: originals[name] if name in wrappers and name not in replaced else proc
                for name, proc in current.items()
            }
        )
    if replaced:
        raise RuntimeError(
            f"{len(replaced)} attention processors were replaced during the call (for example by "
            f"enable_attention_slicing or xformers), first {replaced[0]!r}; their maps are missing. "
            "Set the processors before calling the pipeline."
        )
