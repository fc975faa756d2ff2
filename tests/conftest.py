"""Shared fixtures: tiny pipelines built from configs, the real CLIP vocabulary, and a naive reference
that stores every step's cross-attention maps."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from free_atm.diffusion import FreeATMDiffusionPipeline, FreeATMStableDiffusionXLPipeline  # noqa: E402
from free_atm.diffusion.clip_tokenizer import clip_tokenizer_from_bpe_file  # noqa: E402
from free_atm.testing import tiny_sd_components, tiny_sdxl_components  # noqa: E402


@pytest.fixture
def sd_pipe() -> FreeATMDiffusionPipeline:
    pipe = FreeATMDiffusionPipeline(**tiny_sd_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def sdxl_pipe() -> FreeATMStableDiffusionXLPipeline:
    pipe = FreeATMStableDiffusionXLPipeline(**tiny_sdxl_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def clip_tokenizer():
    """The original 49,408-token CLIP tokenizer, from the BPE file inside the open_clip_torch wheel.

    open_clip is not imported (it needs torchvision); its folder is found from the import spec.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        pytest.fail("install the CLIP vocabulary: pip install --no-deps open_clip_torch==3.3.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    return clip_tokenizer_from_bpe_file(path)


def load_trainer_script(name: str):
    """``trainers/NAME.py`` as a module, to call its functions in this process."""
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parent.parent / "trainers" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class StoreAllReference:
    """Naive capture: on every cross-attention layer, ``attn.get_attention_scores`` of the conditional half,
    every step's maps kept; averaged only at the end. The layer output is left to the wrapped processor.

    ``tokens[i]`` lists, per object of image ``i``, its token positions.
    """

    def __init__(self, unet, tokens: list[list[list[int]]]):
        self.unet, self.tokens = unet, tokens
        self.records: list[tuple[float, int, torch.Tensor]] = []  # (timestep, layer scale, maps)
        self.timestep = None
        self.latent_size = None
        self.originals = unet.attn_processors
        processors = dict(self.originals)
        for name in processors:
            module = unet.get_submodule(name.removesuffix(".processor"))
            if module.is_cross_attention:
                processors[name] = self._wrap(self.originals[name])
        unet.set_attn_processor(processors)
        self.hook = unet.register_forward_pre_hook(self._on_step, with_kwargs=True)

    def _on_step(self, module, args, kwargs):
        self.latent_size = args[0].shape[-2:]
        self.timestep = float(args[1].flatten()[0]) if torch.is_tensor(args[1]) else float(args[1])

    def _wrap(self, processor):
        reference = self

        def call(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
            text = encoder_hidden_states[0] if isinstance(encoder_hidden_states, tuple) else encoder_hidden_states
            n = len(reference.tokens)
            cond_hidden, cond_text = hidden_states[-n:], text[-n:]
            query = attn.head_to_batch_dim(attn.to_q(cond_hidden))
            key = attn.head_to_batch_dim(attn.to_k(cond_text))
            probs = attn.get_attention_scores(query.float(), key.float())  # (n * heads, N, L)
            probs = probs.view(n, attn.heads, *probs.shape[1:]).mean(1)
            maps = torch.stack(
                [torch.stack([probs[i][:, idx].mean(-1) for idx in objs]) for i, objs in enumerate(reference.tokens)]
            )
            scale = int(round((reference.latent_size.numel() / probs.shape[1]) ** 0.5))
            h, w = -(-reference.latent_size[0] // scale), -(-reference.latent_size[1] // scale)
            reference.records.append((reference.timestep, scale, maps.view(n, -1, h, w)))
            return processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)

        return call

    def mean(self, size, scales=None, window=None) -> torch.Tensor:
        kept = [
            F.interpolate(m, size=size, mode="bilinear", align_corners=False, antialias=m.shape[-1] > size[-1])
            for t, s, m in self.records
            if (scales is None or s in scales) and (window is None or window[0] <= t <= window[1])
        ]
        return torch.stack(kept).mean(0)

    def restore(self):
        self.hook.remove()
        self.unet.set_attn_processor(self.originals)


def normalize(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(-2)
    low, high = flat.min(-1, keepdim=True).values, flat.max(-1, keepdim=True).values
    return ((flat - low) / (high - low)).view_as(maps)


@pytest.fixture
def sd3_pipe():
    from free_atm.diffusion import FreeATMStableDiffusion3Pipeline
    from free_atm.testing import tiny_sd3_components

    pipe = FreeATMStableDiffusion3Pipeline(**tiny_sd3_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def flux_pipe():
    from free_atm.diffusion import FreeATMFluxPipeline
    from free_atm.testing import tiny_flux_components

    pipe = FreeATMFluxPipeline(**tiny_flux_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe
