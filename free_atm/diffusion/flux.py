"""``FreeATMFluxPipeline``: Flux with joint-attention masks."""

from typing import Any

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

from ..attention import CaptureConfig
from ..tokens import TextSource
from .capture_mixin import AttentionCaptureMixin, as_prompt_list, capture_call_docstring, capture_call_signature
from .output import FreeATMFluxPipelineOutput
from .sampling import SamplingConfig


class FreeATMFluxPipeline(AttentionCaptureMixin, FluxPipeline):
    """``FluxPipeline`` whose call also returns, per object phrase, the attention map, mask and box.

    Flux's CLIP gives only a pooled vector; the image tokens attend to T5's tokens, so objects are found in
    the T5 prompt (``prompt_2``, else ``prompt``) and an object missing from it is a ``ValueError`` naming
    it. Double- and single-stream blocks both count. Takes the parent's components plus ``capture_config``
    and ``sampling_config``.
    """

    output_class = FreeATMFluxPipelineOutput
    custom_pipeline_name = "free_atm_flux"

    def __init__(
        self,
        scheduler: FlowMatchEulerDiscreteScheduler,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        text_encoder_2: T5EncoderModel,
        tokenizer_2: T5TokenizerFast,
        transformer: FluxTransformer2DModel,
        image_encoder=None,
        feature_extractor=None,
        capture_config: CaptureConfig | dict | None = None,
        sampling_config: SamplingConfig | dict | None = None,
    ):
        super().__init__(
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
            transformer=transformer,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
        )
        self._register_settings(capture_config, sampling_config)

    def _tokenizer_sources(self, arguments: dict[str, Any], prompts: list[str]) -> list[TextSource]:
        t5_prompts = as_prompt_list(arguments.get("prompt_2")) or prompts
        return [TextSource(self.tokenizer_2, t5_prompts, 0, self._text_sequence_length(arguments))]

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Flux packs 2 x 2 latent patches into tokens, so the latent sides are even."""
        factor = 2 * self.vae_scale_factor
        return self.transformer.config.in_channels // 4, 2 * (height // factor), 2 * (width // factor)

    def _pack_noise(self, noise: torch.Tensor) -> torch.Tensor:
        return self._pack_latents(noise, *noise.shape)

    def _text_sequence_length(self, arguments: dict[str, Any]) -> int:
        length = arguments.get("max_sequence_length")
        return 512 if length is None else length

    def _attribution_states(self, words: list[str], arguments: dict[str, Any]) -> torch.Tensor:
        device, length = self._execution_device, self._text_sequence_length(arguments)
        return self.encode_prompt(words, None, device=device, max_sequence_length=length)[0]

    annotation_timesteps = (500,)
    #: the guidance value a guidance-distilled Flux (dev) is given in ``annotate`` (the pipeline's default)
    annotation_guidance = 3.5

    def _annotation_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """Flux's latents, packed into 2 x 2 patch tokens ``(B, h/2 * w/2, 4C)``."""
        latents = super()._annotation_latents(pixels)
        return self._pack_latents(latents, *latents.shape)

    def _annotation_conditioning(
        self, prompts: list[str], height: int, width: int, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        device = self._execution_device
        states, pooled, text_ids = self.encode_prompt(
            prompts, None, device=device, max_sequence_length=self._text_sequence_length(arguments)
        )
        side = 2 * self.vae_scale_factor  # a token is a 2 x 2 patch of latent cells
        image_ids = self._prepare_latent_image_ids(len(prompts), height // side, width // side, device, states.dtype)
        conditioning = {"encoder_hidden_states": states, "pooled_projections": pooled, "txt_ids": text_ids}
        if self.transformer.config.guidance_embeds:
            conditioning["guidance"] = torch.full((len(prompts),), self.annotation_guidance, device=device)
        return {**conditioning, "img_ids": image_ids}

    def denoise(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, conditioning: dict
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow matching: each packed latent mixed with noise at sigma = t / 1000; Flux takes sigma as its
        timestep."""
        sigma = timesteps.to(latents.device, latents.dtype) / 1000
        mix = sigma.view(-1, *[1] * (latents.dim() - 1))
        noisy = (1 - mix) * latents + mix * noise
        prediction = self.transformer(hidden_states=noisy, timestep=sigma, return_dict=False, **conditioning)[0]
        return prediction, noise - latents

    @torch.no_grad()
    def __call__(self, *args, objects=None, capture_config: CaptureConfig | dict | None = None, **kwargs):
        return self._captured_call(super().__call__, args, kwargs, objects, capture_config)

    __call__.__doc__ = capture_call_docstring(FluxPipeline.__call__)
    __call__.__signature__ = capture_call_signature(FluxPipeline.__call__)
