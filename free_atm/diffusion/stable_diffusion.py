"""``FreeATMDiffusionPipeline``: Stable Diffusion 1.x/2.x with cross-attention masks."""

from typing import Any

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from ..attention import CaptureConfig
from .capture_mixin import AttentionCaptureMixin, capture_call_docstring, capture_call_signature
from .output import FreeATMStableDiffusionPipelineOutput


class FreeATMDiffusionPipeline(AttentionCaptureMixin, StableDiffusionPipeline):
    """``StableDiffusionPipeline`` whose call also returns, per object phrase, the attention map, mask and box.

    Takes the parent's components plus ``capture_config`` (the saved :class:`CaptureConfig` as a dict).
    """

    output_class = FreeATMStableDiffusionPipelineOutput

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        safety_checker: StableDiffusionSafetyChecker,
        feature_extractor: CLIPImageProcessor,
        image_encoder: CLIPVisionModelWithProjection = None,
        requires_safety_checker: bool = True,
        capture_config: CaptureConfig | dict | None = None,
    ):
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
            image_encoder=image_encoder,
            requires_safety_checker=requires_safety_checker,
        )
        self._register_capture_config(capture_config)

    def _tokenizer_sources(self, arguments: dict[str, Any], prompts: list[str]) -> list[tuple[Any, list[str]]]:
        return [(self.tokenizer, prompts)]

    @torch.no_grad()
    def __call__(self, *args, objects=None, capture_config: CaptureConfig | dict | None = None, **kwargs):
        return self._captured_call(super().__call__, args, kwargs, objects, capture_config)

    __call__.__doc__ = capture_call_docstring(StableDiffusionPipeline.__call__)
    __call__.__signature__ = capture_call_signature(StableDiffusionPipeline.__call__)
