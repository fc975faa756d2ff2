"""``FreeATMDiffusionPipeline``: Stable Diffusion 1.x/2.x with cross-attention masks."""

from typing import Any

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from ..attention import CaptureConfig
from ..tokens import TextSource
from .capture_mixin import AttentionCaptureMixin, capture_call_docstring, capture_call_signature
from .output import FreeATMStableDiffusionPipelineOutput
from .sampling import SamplingConfig


class FreeATMDiffusionPipeline(AttentionCaptureMixin, StableDiffusionPipeline):
    """``StableDiffusionPipeline`` whose call also returns, per object phrase, the attention map, mask and box.

    Takes the parent's components plus ``capture_config`` and ``sampling_config`` (the saved
    :class:`CaptureConfig` and :class:`~free_atm.diffusion.sampling.SamplingConfig` as dicts).
    """

    output_class = FreeATMStableDiffusionPipelineOutput
    custom_pipeline_name = "free_atm"

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
        sampling_config: SamplingConfig | dict | None = None,
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
        self._register_settings(capture_config, sampling_config)

    def _tokenizer_sources(self, arguments: dict[str, Any], prompts: list[str]) -> list[TextSource]:
        return [TextSource(self.tokenizer, prompts)]

    @torch.no_grad()
    def __call__(self, *args, objects=None, capture_config: CaptureConfig | dict | None = None, **kwargs):
        return self._captured_call(super().__call__, args, kwargs, objects, capture_config)

    __call__.__doc__ = capture_call_docstring(StableDiffusionPipeline.__call__)
    __call__.__signature__ = capture_call_signature(StableDiffusionPipeline.__call__)

    def _attribution_states(self, words: list[str], arguments: dict[str, Any]) -> torch.Tensor:
        device = self._execution_device
        return self.encode_prompt(words, device, 1, False, clip_skip=arguments.get("clip_skip"))[0]

    def _annotation_conditioning(
        self, prompts: list[str], height: int, width: int, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        return {"encoder_hidden_states": self.encode_prompt(prompts, self._execution_device, 1, False)[0]}
