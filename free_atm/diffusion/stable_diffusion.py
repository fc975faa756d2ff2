"""``FreeATMDiffusionPipeline``: Stable Diffusion 1.x/2.x with cross-attention masks."""

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from ..attention import AttentionAggregator, CaptureConfig, capture_cross_attention
from ..tokens import TextSource, object_token_weights
from .capture_mixin import AttentionCaptureMixin, capture_call_docstring, capture_call_signature
from .output import FreeATMAnnotationOutput, FreeATMStableDiffusionPipelineOutput
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

    @torch.no_grad()
    def annotate(
        self,
        images: Image.Image | Sequence[Image.Image] | torch.Tensor,
        prompts: str | Sequence[str],
        objects: Sequence,
        timesteps: Sequence[int] = (100,),
        noise_draws: int = 1,
        generator: torch.Generator | None = None,
        capture_config: CaptureConfig | dict | None = None,
    ) -> FreeATMAnnotationOutput:
        """Masks for objects in existing images: noise each image to every timestep in ``timesteps``
        (``noise_draws`` times each), run the UNet with its caption, and average the captured maps.

        Guidance is off (the conditional pass only). ``images`` are PIL images or a tensor in [0, 1];
        ``objects`` holds one list of phrases per prompt.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        per_image = [list(o) for o in ([objects] if objects and isinstance(objects[0], str) else objects)]
        if not (len(per_image) == len(prompts) == (len(images) if not isinstance(images, Image.Image) else 1)):
            raise ValueError(
                f"annotate needs one prompt and one object list per image, got {len(prompts)} prompts and "
                f"{len(per_image)} object lists"
            )
        if noise_draws < 1 or not timesteps:
            raise ValueError(f"annotate needs timesteps and noise_draws >= 1, got {timesteps!r} and {noise_draws}")
        if not isinstance(images, Image.Image | torch.Tensor) and len({image.size for image in images}) > 1:
            # one VAE batch takes one size, and resizing would put masks and boxes in the wrong pixels:
            # images of different sizes are annotated one by one, each at its own size
            parts = [
                self.annotate(image, prompt, [phrases], timesteps, noise_draws, generator, capture_config)
                for image, prompt, phrases in zip(images, prompts, per_image)
            ]
            fields_ = ("objects", "attention_maps", "masks", "boxes", "kept_maps")
            return FreeATMAnnotationOutput(
                **{
                    f: [v for part in parts for v in getattr(part, f)]
                    for f in fields_
                    if getattr(parts[0], f) is not None
                }
            )
        config = self.capture_config.updated(capture_config)
        device = self._execution_device
        pixels = self.image_processor.preprocess(images).to(device, self.vae.dtype)
        latents = self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor
        prompt_embeds, _ = self.encode_prompt(prompts, device, 1, do_classifier_free_guidance=False)
        weights = object_token_weights([(self.tokenizer, prompts)], per_image, self._text_sequence_length({}))
        aggregator = AttentionAggregator(weights, config)
        with capture_cross_attention(self.unet, aggregator):
            for timestep in timesteps:
                t = torch.full((len(prompts),), int(timestep), device=device, dtype=torch.long)
                for _ in range(noise_draws):
                    noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=latents.dtype)
                    self.unet(self.scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=prompt_embeds)
        images_01 = (pixels.float() + 1) / 2 if config.pixel_refinement else None  # preprocess gave [-1, 1]
        return FreeATMAnnotationOutput(**self._mask_fields(aggregator, per_image, config, images_01))
