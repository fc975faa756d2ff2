"""``FreeATMStableDiffusion3Pipeline``: Stable Diffusion 3.x with joint-attention masks."""

from typing import Any

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

from ..attention import CaptureConfig
from ..tokens import TextSource
from .capture_mixin import AttentionCaptureMixin, as_prompt_list, capture_call_docstring, capture_call_signature
from .output import FreeATMStableDiffusion3PipelineOutput
from .sampling import SamplingConfig


class FreeATMStableDiffusion3Pipeline(AttentionCaptureMixin, StableDiffusion3Pipeline):
    """``StableDiffusion3Pipeline`` whose call also returns, per object phrase, the attention map, mask and box.

    The image tokens attend to one text sequence: 77 CLIP positions (CLIP-L reads ``prompt``, CLIP-G
    ``prompt_2``, their embeddings side by side), then ``max_sequence_length`` T5 positions (``prompt_3``).
    An object's columns are its tokens in whichever of the three prompts contain it; an object in none of
    them is a ``ValueError`` naming it. Takes the parent's components plus ``capture_config`` and ``sampling_config``.
    """

    output_class = FreeATMStableDiffusion3PipelineOutput
    custom_pipeline_name = "free_atm_sd3"

    def __init__(
        self,
        transformer: SD3Transformer2DModel,
        scheduler: FlowMatchEulerDiscreteScheduler,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        text_encoder_2: CLIPTextModelWithProjection,
        tokenizer_2: CLIPTokenizer,
        text_encoder_3: T5EncoderModel,
        tokenizer_3: T5TokenizerFast,
        image_encoder=None,
        feature_extractor=None,
        capture_config: CaptureConfig | dict | None = None,
        sampling_config: SamplingConfig | dict | None = None,
    ):
        super().__init__(
            transformer=transformer,
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
            text_encoder_3=text_encoder_3,
            tokenizer_3=tokenizer_3,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
        )
        self._register_settings(capture_config, sampling_config)

    def _tokenizer_sources(self, arguments: dict[str, Any], prompts: list[str]) -> list[TextSource]:
        second = as_prompt_list(arguments.get("prompt_2")) or prompts
        third = as_prompt_list(arguments.get("prompt_3")) or prompts
        sources = [TextSource(self.tokenizer, prompts), TextSource(self.tokenizer_2, second)]
        if self.text_encoder_3 is not None:  # without T5 its positions hold zeros
            sources.append(TextSource(self.tokenizer_3, third, self.tokenizer_max_length, self._t5_length(arguments)))
        return sources

    def _text_sequence_length(self, arguments: dict[str, Any]) -> int:
        return self.tokenizer_max_length + self._t5_length(arguments)

    @staticmethod
    def _t5_length(arguments: dict[str, Any]) -> int:
        """The call's ``max_sequence_length``; 0 is a length (without T5, the image then attends to CLIP alone)."""
        length = arguments.get("max_sequence_length")
        return 256 if length is None else length

    def _attribution_states(self, words: list[str], arguments: dict[str, Any]) -> torch.Tensor:
        return self.encode_prompt(
            words, None, None, device=self._execution_device, do_classifier_free_guidance=False,
            max_sequence_length=self._t5_length(arguments),
        )[0]  # fmt: skip

    annotation_timesteps = (500,)

    def _annotation_conditioning(
        self, prompts: list[str], height: int, width: int, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        states, _, pooled, _ = self.encode_prompt(
            prompts, None, None, device=self._execution_device, do_classifier_free_guidance=False,
            max_sequence_length=self._t5_length(arguments),
        )  # fmt: skip
        return {"encoder_hidden_states": states, "pooled_projections": pooled}

    def denoise(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, conditioning: dict
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow matching: each latent mixed with noise at sigma = t / 1000, the transformer called at t."""
        t = timesteps.to(latents.device, latents.dtype)
        sigma = (t / 1000).view(-1, *[1] * (latents.dim() - 1))
        noisy = (1 - sigma) * latents + sigma * noise
        return self.transformer(hidden_states=noisy, timestep=t, **conditioning).sample, noise - latents

    @torch.no_grad()
    def __call__(self, *args, objects=None, capture_config: CaptureConfig | dict | None = None, **kwargs):
        return self._captured_call(super().__call__, args, kwargs, objects, capture_config)

    __call__.__doc__ = capture_call_docstring(StableDiffusion3Pipeline.__call__)
    __call__.__signature__ = capture_call_signature(StableDiffusion3Pipeline.__call__)
