"""``FreeATMStableDiffusionXLPipeline``: SDXL with cross-attention masks."""

from typing import Any

import torch
from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import (
    CLIPImageProcessor,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionModelWithProjection,
)

from ..attention import CaptureConfig
from ..tokens import TextSource
from .capture_mixin import AttentionCaptureMixin, as_prompt_list, capture_call_docstring, capture_call_signature
from .output import FreeATMStableDiffusionXLPipelineOutput
from .sampling import SamplingConfig


class FreeATMStableDiffusionXLPipeline(AttentionCaptureMixin, StableDiffusionXLPipeline):
    """``StableDiffusionXLPipeline`` whose call also returns, per object phrase, the attention map, mask and box.

    SDXL concatenates two text encoders' states per token position, so an object's positions are found
    with both tokenizers (``prompt`` for the first, ``prompt_2`` or ``prompt`` for the second).
    """

    output_class = FreeATMStableDiffusionXLPipelineOutput
    custom_pipeline_name = "free_atm_sdxl"

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        text_encoder_2: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        tokenizer_2: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        image_encoder: CLIPVisionModelWithProjection = None,
        feature_extractor: CLIPImageProcessor = None,
        force_zeros_for_empty_prompt: bool = True,
        add_watermarker: bool | None = None,
        capture_config: CaptureConfig | dict | None = None,
        sampling_config: SamplingConfig | dict | None = None,
    ):
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
            force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
            add_watermarker=add_watermarker,
        )
        self._register_settings(capture_config, sampling_config)

    def _tokenizer_sources(self, arguments: dict[str, Any], prompts: list[str]) -> list[TextSource]:
        second = as_prompt_list(arguments.get("prompt_2")) or prompts
        pairs = [(self.tokenizer, prompts), (self.tokenizer_2, second)]
        return [TextSource(tokenizer, texts) for tokenizer, texts in pairs if tokenizer is not None]

    @torch.no_grad()
    def _attribution_states(self, words: list[str], arguments: dict[str, Any]) -> torch.Tensor:
        return self.encode_prompt(
            prompt=words,
            device=self._execution_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
            clip_skip=arguments.get("clip_skip"),
        )[0]

    def _annotation_conditioning(
        self, prompts: list[str], height: int, width: int, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        """Text and pooled embeddings, and the added time ids of an image of this size, uncropped."""
        states, _, pooled, _ = self.encode_prompt(
            prompt=prompts, device=self._execution_device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        projection = self.text_encoder_2.config.projection_dim if self.text_encoder_2 else int(pooled.shape[-1])
        time_ids = self._get_add_time_ids((height, width), (0, 0), (height, width), states.dtype, projection)
        time_ids = time_ids.to(states.device).repeat(len(prompts), 1)
        return {"encoder_hidden_states": states, "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}

    def __call__(self, *args, objects=None, capture_config: CaptureConfig | dict | None = None, **kwargs):
        return self._captured_call(super().__call__, args, kwargs, objects, capture_config)

    __call__.__doc__ = capture_call_docstring(StableDiffusionXLPipeline.__call__)
    __call__.__signature__ = capture_call_signature(StableDiffusionXLPipeline.__call__)
