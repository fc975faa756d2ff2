"""What the Free-ATM pipelines add to their diffusers parents: a captured call and its post-processing."""

from __future__ import annotations

import inspect
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from ..attention import AttentionAggregator, CaptureConfig, capture_attention
from ..attention.attribution import Attribution, attribution_weights
from ..confidence import mask_confidence
from ..masks import maps_to_masks
from ..paths import custom_pipeline_path
from ..pixel_refinement import as_pixels
from ..tokens import TextSource, object_token_weights
from .images import annotation_images
from .output import FreeATMAnnotationOutput, KeptMaps
from .sampling import SamplingConfig


def as_prompt_list(prompt: str | Sequence[str] | None) -> list[str] | None:
    if prompt is None:
        return None
    return [prompt] if isinstance(prompt, str) else list(prompt)


def _per_prompt_objects(objects: Sequence | None, prompts: list[str] | None) -> list[list[str]] | None:
    """One list of phrases per prompt; ``None`` when nothing is to be captured.

    ``objects`` may be a flat list of phrases for a single prompt; when omitted, prompts that carry an
    ``objects`` attribute (``free_atm.prompts``) supply them.
    """
    if objects is None:
        carried = [getattr(p, "objects", None) for p in prompts or []]
        if not carried or all(c is None for c in carried):
            return None
        objects = [list(c or []) for c in carried]
    objects = list(objects)
    if objects and all(isinstance(o, str) for o in objects):
        objects = [objects]
    if prompts is None:
        raise ValueError("`objects` need the text `prompt`; they cannot be located in `prompt_embeds`")
    if len(objects) != len(prompts):
        raise ValueError(f"got {len(objects)} object lists for {len(prompts)} prompts; give one list per prompt")
    for phrases in objects:
        if isinstance(phrases, str) or not all(isinstance(p, str) for p in phrases):
            raise ValueError(f"each prompt's objects must be a list of phrases, got {phrases!r}")
    return [list(p) for p in objects]


class AttentionCaptureMixin:
    """Mixed into a Stable Diffusion-family pipeline: ``__call__`` also returns maps, masks and boxes.

    The pipeline registers ``capture_config`` and ``sampling_config`` (dicts) in its config, so
    ``save_pretrained`` and ``from_pretrained`` keep the capture and sampling settings; a call may override
    them (:mod:`free_atm.diffusion.sampling`).
    """

    #: the parent's output dataclass extended with the mask fields
    output_class: type
    #: the folder of ``pipelines/`` (``free_atm.custom_pipelines``) whose shim loads this class
    custom_pipeline_name: str

    @property
    def _code_module(self) -> str:
        return f"pipeline_{self.custom_pipeline_name}"

    def to_json_string(self) -> str:
        """``model_index.json`` naming ``[<module>, <class>]``, as diffusers' custom pipelines do, so that a
        saved folder (or its Hub repo) loads with ``DiffusionPipeline.from_pretrained(folder,
        trust_remote_code=True)`` through the module :meth:`save_config` writes beside it."""
        index = json.loads(super().to_json_string())
        index["_class_name"] = [self._code_module, type(self).__name__]
        return json.dumps(index, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load_config(cls, *args: Any, **kwargs: Any):
        """diffusers' ``load_config``; read through a Free-ATM class, a saved folder's ``[module, class]``
        names that class, so ``FreeATMDiffusionPipeline.from_pretrained(folder)`` runs no code from the
        folder (``DiffusionPipeline.from_pretrained`` goes through the saved module instead)."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        if isinstance(config.get("_class_name"), list):
            config["_class_name"] = config["_class_name"][1]
        return loaded

    def save_config(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> None:
        """diffusers' ``save_config`` with this pipeline's code beside ``model_index.json`` (a shim that
        imports the class from free_atm, which the loading machine must have installed)."""
        shim = Path(custom_pipeline_path(self.custom_pipeline_name)) / "pipeline.py"
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shim, Path(save_directory) / f"{self._code_module}.py")
        super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)

    def _register_settings(
        self, capture_config: CaptureConfig | dict | None, sampling_config: SamplingConfig | dict | None
    ) -> None:
        if isinstance(capture_config, CaptureConfig):
            capture_config = capture_config.to_dict()
        self.register_to_config(capture_config=CaptureConfig.from_dict(capture_config).to_dict())
        self.set_sampling_config(sampling_config)

    @property
    def capture_config(self) -> CaptureConfig:
        """The capture settings saved with this pipeline."""
        return CaptureConfig.from_dict(self.config.capture_config)

    def set_capture_config(self, capture_config: CaptureConfig | dict | None = None, **overrides: Any) -> None:
        """Replace the saved capture settings (a config, a dict, or keyword overrides of the current ones)."""
        config = self.capture_config.updated(capture_config).updated(overrides or None)
        self.register_to_config(capture_config=config.to_dict())

    @property
    def sampling_config(self) -> SamplingConfig:
        """The sampling settings saved with this pipeline (every field ``None``: the parent's behaviour)."""
        return SamplingConfig.from_dict(self.config.sampling_config)

    def set_sampling_config(self, sampling_config: SamplingConfig | dict | None = None, **overrides: Any) -> None:
        """Apply sampling settings (a config, a dict, or keyword overrides of the current ones): the values
        given replace the saved ones, and a scheduler or timestep spacing rebuilds ``self.scheduler``."""
        current = SamplingConfig.from_dict(getattr(self.config, "sampling_config", None))
        config = current.updated(sampling_config).updated(overrides or None)
        self.scheduler = config.scheduler_for(self.scheduler)
        self.register_to_config(sampling_config=config.to_dict())

    #: the noise level (0-1000) ``annotate`` reads a real image at when not told: low for UNets (the SD 1.5
    #: benchmark's choice), the middle of the flow for SD3 and Flux (ConceptAttention and Seg4Diff's)
    annotation_timesteps: tuple[int, ...] = (100,)

    @torch.no_grad()
    def annotate(
        self,
        images: Image.Image | np.ndarray | Sequence[Image.Image | np.ndarray] | torch.Tensor,
        prompts: str | Sequence[str],
        objects: Sequence,
        timesteps: Sequence[int] | None = None,
        noise_draws: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        capture_config: CaptureConfig | dict | None = None,
        allow_absent_objects: bool = False,
        max_sequence_length: int | None = None,
    ) -> FreeATMAnnotationOutput:
        """Masks for objects in existing images: noise each image to every level in ``timesteps`` (0-1000 on
        every family; default :attr:`annotation_timesteps`; on SD3 and Flux the flow's sigma is t / 1000),
        ``noise_draws`` times each, run the denoiser once per level and draw with its caption, and average
        the captured maps. No inversion and no guidance (the conditional pass only).

        ``images`` are PIL images (any mode; converted to RGB) or a tensor in [0, 1]; ``objects`` holds
        one list of phrases per prompt. Images of different sizes are each annotated at their own size.
        ``generator`` may be a list, one per image: each image's noise is then its own, whatever the batch.
        ``allow_absent_objects`` maps words the caption lacks, and ``max_sequence_length`` (SD3 and Flux) pads the
        T5 text to that length, as in the pipeline call (default: the pipeline's).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        per_image = [list(o) for o in ([objects] if objects and isinstance(objects[0], str) else objects)]
        if not isinstance(images, torch.Tensor):
            images = annotation_images(images, 2 * self.image_processor.config.vae_scale_factor)
        if not (len(per_image) == len(prompts) == len(images)):
            raise ValueError(
                f"annotate needs one prompt and one object list per image, got {len(images)} images, "
                f"{len(prompts)} prompts and {len(per_image)} object lists"
            )
        timesteps = self.annotation_timesteps if timesteps is None else tuple(timesteps)
        if noise_draws < 1 or not timesteps or not all(0 <= t <= 1000 for t in timesteps):
            raise ValueError(
                f"annotate needs timesteps in [0, 1000] and noise_draws >= 1, got {timesteps!r} and {noise_draws}"
            )
        if not isinstance(images, torch.Tensor) and len({image.size for image in images}) > 1:
            # one VAE batch takes one size, and resizing would put masks and boxes in the wrong pixels:
            # images of different sizes are annotated one by one, each at its own size
            generators = generator if isinstance(generator, list) else [generator] * len(images)
            parts = [
                self.annotate(
                    image,
                    prompt,
                    [phrases],
                    timesteps,
                    noise_draws,
                    [own] if own else None,
                    capture_config,
                    allow_absent_objects,
                    max_sequence_length,
                )
                for image, prompt, phrases, own in zip(images, prompts, per_image, generators)
            ]
            names = [f.name for f in fields(FreeATMAnnotationOutput) if getattr(parts[0], f.name) is not None]
            return FreeATMAnnotationOutput(
                **{name: [v for part in parts for v in getattr(part, name)] for name in names}
            )
        config = self.capture_config.updated(capture_config)
        device = self._execution_device
        pixels = self.image_processor.preprocess(images).to(device, self.vae.dtype)
        latents = self._annotation_latents(pixels)
        arguments = {"max_sequence_length": max_sequence_length}
        conditioning = self._annotation_conditioning(prompts, *pixels.shape[-2:], arguments)
        weights, attribution = self._object_weights(arguments, prompts, per_image, allow_absent_objects)
        aggregator = AttentionAggregator(weights, config)
        aggregator.attribution = attribution
        with capture_attention(self.denoiser, aggregator):
            for timestep in timesteps:
                for _ in range(noise_draws):
                    noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=latents.dtype)
                    aggregator.last_timestep = None  # every draw counts, repeated levels too (see start_call)
                    self.denoise(latents, noise, torch.full((len(latents),), float(timestep)), conditioning)
        images_01 = (pixels.float() + 1) / 2 if config.pixel_refinement else None  # preprocess gave [-1, 1]
        return FreeATMAnnotationOutput(**self._mask_fields(aggregator, per_image, config, images_01))

    def _annotation_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """The clean latents of images ``(B, 3, H, W)`` in [-1, 1], as the denoiser sees them."""
        vae = self.vae.config
        latents = self.vae.encode(pixels).latent_dist.mode()
        return (latents - (getattr(vae, "shift_factor", None) or 0.0)) * vae.scaling_factor

    def _annotation_conditioning(
        self, prompts: list[str], height: int, width: int, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        """The denoiser's text (and added) conditioning for ``prompts`` at an image size, without guidance;
        ``arguments`` holds the call's ``max_sequence_length`` (SD3 and Flux)."""
        raise NotImplementedError

    def denoise(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, conditioning: dict
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One denoiser call on ``latents`` (:meth:`_annotation_latents`) noised with ``noise`` to each
        image's level in ``timesteps`` ``(B,)`` (0-1000 on every family), with ``conditioning``
        (:meth:`_annotation_conditioning`): the denoiser's prediction and the target its training loss
        compares it with (the noise or velocity the scheduler predicts; flow matching: noise minus latent).
        This is the UNets' (SD 1.x/2.x, SDXL); the transformers override it."""
        t = timesteps.to(latents.device).long()
        prediction = self.unet(self.scheduler.add_noise(latents, noise, t), t, **conditioning).sample
        if self.scheduler.config.prediction_type == "v_prediction":
            return prediction, self.scheduler.get_velocity(latents, noise, t)
        return prediction, noise

    def _tokenizer_sources(self, arguments: dict[str, Any], prompts: list[str]) -> list[TextSource]:
        """The tokenizers whose tokens the denoiser attends to, each with the prompts it encodes and where
        its tokens sit in the attended text sequence."""
        raise NotImplementedError

    @property
    def denoiser(self) -> torch.nn.Module:
        """The model whose attention is captured: the UNet, or the diffusion transformer."""
        return getattr(self, "transformer", None) or self.unet

    @property
    def default_image_size(self) -> tuple[int, int]:
        """``(height, width)`` of an image when the call gives neither."""
        side = (getattr(self, "default_sample_size", None) or self.unet.config.sample_size) * self.vae_scale_factor
        return side, side

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(channels, h, w)`` of one image's initial noise before any packing."""
        return self.denoiser.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor

    def initial_latents(self, seeds: Sequence[int], height: int, width: int) -> torch.Tensor:
        """The ``latents`` argument for one image per seed: noise drawn on the CPU from each seed alone (so
        any device and batch draws the same noise), in the layout the pipeline takes."""
        shape = self.latent_shape(height, width)
        noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
        return self._pack_noise(noise).to(self.device, self.denoiser.dtype)

    def _pack_noise(self, noise: torch.Tensor) -> torch.Tensor:
        return noise

    def check_objects(self, prompts: Sequence[str], objects: Sequence[Sequence[str]]) -> None:
        """Raise the ``ValueError`` a call would raise for an object that is not in its prompt as the text
        encoders read it (absent, or truncated away), without running the model."""
        object_token_weights(self._tokenizer_sources({}, list(prompts)), objects, self._text_sequence_length({}))

    def _captured_call(
        self,
        parent_call: Callable,
        args: tuple,
        kwargs: dict[str, Any],
        objects: Sequence | None,
        capture_config: CaptureConfig | dict | None,
    ):
        allow_absent = kwargs.pop("allow_absent_objects", False)
        signature = inspect.signature(parent_call)
        arguments = signature.bind(*args, **kwargs).arguments
        arguments.update(arguments.pop("kwargs", {}))
        arguments = {**self.sampling_config.call_defaults(set(signature.parameters)), **arguments}
        return_dict = arguments.pop("return_dict", True)
        prompts = as_prompt_list(arguments.get("prompt"))
        per_prompt = _per_prompt_objects(objects, prompts)
        config = self.capture_config.updated(capture_config)
        if config.pixel_refinement and arguments.get("output_type") == "latent":
            raise ValueError(
                f"pixel_refinement={config.pixel_refinement} follows the decoded image, and output_type='latent' "
                "decodes none; set pixel_refinement=0 or another output_type"
            )
        if per_prompt is None:
            output = parent_call(**arguments, return_dict=True)
            extras = self._empty_mask_fields(len(prompts or []) * (arguments.get("num_images_per_prompt") or 1))
            return self._package(output, extras, return_dict)

        images_per_prompt = arguments.get("num_images_per_prompt") or 1
        weights, attribution = self._object_weights(arguments, prompts, per_prompt, allow_absent)
        aggregator = AttentionAggregator(weights.repeat_interleave(images_per_prompt, dim=0), config)
        aggregator.attribution = attribution
        with capture_attention(self.denoiser, aggregator):
            output = parent_call(**arguments, return_dict=True)

        per_image = [per_prompt[i // images_per_prompt] for i in range(aggregator.num_images)]
        pixels = [as_pixels(image) for image in output.images] if config.pixel_refinement else None
        return self._package(output, self._mask_fields(aggregator, per_image, config, pixels), return_dict)

    def _object_weights(
        self, arguments: dict[str, Any], prompts: list[str], objects: list[list[str]], allow_absent: bool
    ) -> tuple[torch.Tensor, Attribution | None]:
        """Each prompt's object token weights; with ``allow_absent``, objects the prompt lacks are read from
        their own encoding (:mod:`free_atm.attention.attribution`), else they are a ``ValueError``."""
        sources, length = self._tokenizer_sources(arguments, prompts), self._text_sequence_length(arguments)
        weights = object_token_weights(sources, objects, length, skip_absent=allow_absent)
        found = weights.any(1)  # (prompts, objects)
        absent = sorted({o for i, phrases in enumerate(objects) for m, o in enumerate(phrases) if not found[i, m]})
        if not absent:
            return weights, None
        states = self._attribution_states(absent, arguments)
        alone = {"max_sequence_length": arguments.get("max_sequence_length")}  # each word encoded as the prompt is
        word_weights = object_token_weights(self._tokenizer_sources(alone, absent), [[w] for w in absent], length)
        weights, columns = attribution_weights(weights, objects, absent, word_weights)
        return weights, Attribution(states, columns)

    def _attribution_states(self, words: list[str], arguments: dict[str, Any]) -> torch.Tensor:
        """Each word encoded on its own by the pipeline's text encoder(s), as the denoiser reads text:
        ``(A, L, D)`` (SD3 and Flux then carry the words' columns through their blocks as concept tokens,
        :mod:`free_atm.attention.concepts`)."""
        raise NotImplementedError

    def _mask_fields(
        self,
        aggregator: AttentionAggregator,
        per_image: list[list[str]],
        config: CaptureConfig,
        pixels: Sequence[torch.Tensor] | None = None,
    ) -> dict[str, list]:
        """Objects, normalised maps, masks, boxes and confidences of every image, from a finished aggregation;
        ``pixels`` are the images, ``(3, H, W)`` in [0, 1] each, for ``config.pixel_refinement``."""
        maps = aggregator.result()
        image_size = tuple(s * self.vae_scale_factor for s in aggregator.latent_size)
        fields_ = {"objects": [], "attention_maps": [], "masks": [], "boxes": [], "confidence": []}
        for i, phrases in enumerate(per_image):
            soft, masks, boxes = maps_to_masks(
                maps[i, : len(phrases)],
                image_size,
                config.threshold_method,
                config.threshold,
                config.largest_component,
                None if pixels is None else pixels[i],
                config.pixel_refinement,
            )
            for key, value in zip(fields_, (list(phrases), soft, masks, boxes, mask_confidence(soft, masks))):
                fields_[key].append(value)
        if config.keep != "none":
            kept = {name: maps.cpu().numpy() for name, maps in aggregator.kept().items()}
            unet = getattr(self, "transformer", None) is None  # a transformer's layers are its blocks, not scales
            scales = list(aggregator.layer_scales) if "layers" in kept and unet else None
            fields_["kept_maps"] = [
                KeptMaps(
                    list(aggregator.timesteps),
                    **{name: maps[i, : len(phrases)] for name, maps in kept.items()},
                    layer_scales=scales,
                )
                for i, phrases in enumerate(per_image)
            ]
        return fields_

    def _text_sequence_length(self, arguments: dict[str, Any]) -> int:
        """Length of the text sequence the denoiser attends to in a call with ``arguments`` (prompts are
        padded to it)."""
        tokenizer = getattr(self, "tokenizer", None) or self.tokenizer_2
        return tokenizer.model_max_length

    @staticmethod
    def _empty_mask_fields(num_images: int) -> dict[str, list]:
        return {
            "objects": [[] for _ in range(num_images)],
            "attention_maps": [np.zeros((0, 0, 0), np.float32) for _ in range(num_images)],
            "masks": [np.zeros((0, 0, 0), bool) for _ in range(num_images)],
            "boxes": [np.zeros((0, 4), np.float32) for _ in range(num_images)],
            "confidence": [np.zeros(0, np.float32) for _ in range(num_images)],
        }

    def _package(self, output, extras: dict[str, list], return_dict: bool):
        """The parent's output extended with the mask fields: a dataclass, or the parent's tuple + fields."""
        values = {f.name: getattr(output, f.name) for f in fields(output)}
        if return_dict:
            return self.output_class(**values, **extras)
        return (*values.values(), *extras.values())


def capture_call_signature(parent: Callable) -> inspect.Signature:
    """The parent's call signature with the keyword-only ``objects`` and ``capture_config`` added."""
    params = list(inspect.signature(parent).parameters.values())
    variadic = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    added = [
        inspect.Parameter("objects", inspect.Parameter.KEYWORD_ONLY, default=None),
        inspect.Parameter("capture_config", inspect.Parameter.KEYWORD_ONLY, default=None),
        inspect.Parameter("allow_absent_objects", inspect.Parameter.KEYWORD_ONLY, default=False),
    ]
    return inspect.Signature([p for p in params if p not in variadic] + added + variadic)


def capture_call_docstring(parent: Callable) -> str:
    """The call docstring: the added arguments, then the parent's."""
    return (
        "Generate images and, for every object phrase, an attention map, a mask and a box.\n\n"
        "Added arguments (keyword only):\n"
        "    objects: per prompt, the object phrases to capture (a flat list for a single prompt); when\n"
        "        omitted, prompts carrying an ``objects`` attribute supply them, otherwise nothing is captured.\n"
        "    capture_config: a ``CaptureConfig`` or a dict overriding the pipeline's saved capture settings.\n"
        "    allow_absent_objects: map objects the prompt does not contain, each from its own encoding and\n"
        "        the layers' own key projections (UNet pipelines; see ``free_atm.attention.attribution``);\n"
        "        without it an absent object is a ``ValueError`` naming it.\n\n"
        "Every other argument is the parent pipeline's:\n" + (parent.__doc__ or "")
    )
