"""What the web demo does, without the web: one pipeline loaded once and reused, a generation or an
annotation per request, and the files a person downloads. Errors a person can fix are ``ValueError`` s
naming the bad value; the page shows their message."""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..attention import CaptureConfig
from ..prompts import match_vocabulary
from ..visualize import confidence_labels, overlay_masks
from .heatmap import heatmap

#: called with (fraction done, what is happening)
ProgressFn = Callable[[float, str], None]

#: a capture setting left as the model saved it (its defaults, chosen on the mask-quality benchmark)
SAVED = "saved"

#: small images (the shapes model draws 64 px) are shown enlarged, by whole pixels, to at least this side
DISPLAY_SIDE = 384


def _no_progress(fraction: float, description: str) -> None:
    pass


def parse_objects(text: str) -> list[str]:
    """Object phrases from the comma- or line-separated text of the objects box."""
    return [phrase.strip() for phrase in re.split(r"[,\n]", text or "") if phrase.strip()]


@dataclass
class DemoResult:
    """One request's answer: the image, and for the page the image enlarged to :data:`DISPLAY_SIDE`, its
    overlay (outlines, boxes, names with confidences) and one heat map per object at that size; the masks,
    boxes, soft maps and confidences as arrays at the image's size; the files to download (mask PNGs, a
    one-row dataset)."""

    image: Image.Image
    shown: Image.Image
    overlay: Image.Image
    heatmaps: list[tuple[Image.Image, str]]
    objects: list[str]
    masks: np.ndarray
    attention_maps: np.ndarray
    boxes: np.ndarray
    confidence: np.ndarray
    files: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """The JSON the page and the API show: objects, boxes, confidences, and the mask and map shapes."""
        return {
            "objects": self.objects,
            "boxes": [[None if np.isnan(v) else round(float(v), 1) for v in box] for box in self.boxes],
            "confidence": [round(float(c), 3) for c in self.confidence],
            "mask_shape": list(self.masks.shape),
            "attention_map_shape": list(self.attention_maps.shape),
        }


def check_device(device: str) -> None:
    """Raise ``ValueError`` unless ``device`` names a device this machine has (the model loads on the
    first request, so a bad device would otherwise leave a server that never answers)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1, mps)") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (parsed.index or 0) >= count:
            raise ValueError(f"--device {device!r} does not exist here: this machine has {count} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device!r} does not exist here: this machine has no MPS device")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device!r}: the demo runs on cpu, cuda or mps")


class DemoSession:
    """The demo's state: the model name, and its pipeline, loaded by the first request and reused (a lock
    keeps concurrent first requests from loading it twice)."""

    def __init__(self, model: str = "shapes", device: str | None = None, output_dir: str | None = None):
        from ..models import check_model_reference, named_model

        check_model_reference(model)
        self.model = model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        check_device(self.device)
        self.output_dir = Path(output_dir or tempfile.mkdtemp(prefix="free-atm-demo-"))
        self.vocabulary = named_model(model).vocabulary()
        self.example_prompt = named_model(model).example_prompt
        self.loads = 0
        self._pipe = None
        self._lock = threading.Lock()

    def pipeline(self, progress: ProgressFn = _no_progress):
        """The pipeline, loaded on first use."""
        with self._lock:
            if self._pipe is None:
                from ..models import load_pipeline

                progress(0.0, f"loading {self.model}")
                dtype = torch.float16 if self.device == "cuda" else None
                self._pipe = load_pipeline(self.model, self.device, dtype)
                self.loads += 1
        return self._pipe

    def suggest_objects(self, prompt: str) -> str:
        """The objects box's automatic filling: the vocabulary's phrases found in ``prompt``."""
        return ", ".join(match_vocabulary(prompt or "", self.vocabulary))

    def _objects(self, prompt: str, objects_text: str) -> list[str]:
        if not (prompt or "").strip():
            raise ValueError("the prompt is empty: describe the image to draw or the image given")
        objects = parse_objects(objects_text) or parse_objects(self.suggest_objects(prompt))
        if not objects:
            raise ValueError(
                f"no object named in the objects box, and none of the vocabulary found in prompt {prompt!r}: "
                "write the object phrases (comma-separated)"
            )
        return objects

    @staticmethod
    def _capture(
        threshold_method: str, threshold: float, largest_component: bool, refinement: str, pixel_refinement: int | str
    ) -> dict:
        """The overrides of the model's saved capture settings; :data:`SAVED` keeps a saved one (a saved
        threshold method keeps its saved threshold too)."""
        capture: dict = {"largest_component": bool(largest_component)}
        if threshold_method != SAVED:
            capture |= {"threshold_method": threshold_method, "threshold": float(threshold)}
        if refinement != SAVED:
            capture["refinement"] = refinement
        if pixel_refinement != SAVED:
            capture["pixel_refinement"] = pixel_refinement
        CaptureConfig.check_overrides(capture)
        return capture

    def generate(
        self,
        prompt: str,
        objects_text: str = "",
        steps: int = 25,
        guidance_scale: float = 5.0,
        seed: int = 0,
        threshold_method: str = SAVED,
        threshold: float = 0.4,
        largest_component: bool = False,
        refinement: str = SAVED,
        pixel_refinement: int | str = SAVED,
        progress: ProgressFn = _no_progress,
    ) -> DemoResult:
        """Draw ``prompt`` and capture the masks of its objects (the box's, else the vocabulary's)."""
        objects = self._objects(prompt, objects_text)
        steps, seed = int(steps), int(seed)
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        capture = self._capture(threshold_method, threshold, largest_component, refinement, pixel_refinement)
        pipe = self.pipeline(progress)
        pipe.check_objects([prompt], [objects])

        def on_step(pipe_, step, timestep, tensors):
            progress((step + 1) / steps, f"denoising step {step + 1} of {steps}")
            return tensors

        height, width = pipe.default_image_size
        out = pipe(
            prompt,
            objects=objects,
            num_inference_steps=steps,
            guidance_scale=float(guidance_scale),
            latents=pipe.initial_latents([seed], height, width),
            capture_config=capture,
            callback_on_step_end=on_step,
        )
        return self._result(out.images[0], prompt, out, seed)

    def annotate(
        self,
        image: Image.Image | None,
        caption: str,
        objects_text: str = "",
        timestep: int = 100,
        noise_draws: int = 4,
        threshold_method: str = SAVED,
        threshold: float = 0.4,
        largest_component: bool = False,
        refinement: str = SAVED,
        pixel_refinement: int | str = SAVED,
        progress: ProgressFn = _no_progress,
    ) -> DemoResult:
        """Masks of the objects of ``caption`` in an existing ``image`` (``annotate``: noised to ``timestep``,
        ``noise_draws`` times, maps averaged)."""
        if image is None:
            raise ValueError("no image given: upload the image to annotate")
        objects = self._objects(caption, objects_text)
        capture = self._capture(threshold_method, threshold, largest_component, refinement, pixel_refinement)
        pipe = self.pipeline(progress)
        if not hasattr(pipe, "annotate"):
            raise ValueError(
                f"annotate needs a Stable Diffusion 1.x/2.x model; {self.model!r} is a {type(pipe).__name__}"
            )
        height, width = pipe.default_image_size
        image = image.convert("RGB").resize((width, height), Image.BICUBIC)
        progress(0.5, "annotating")
        out = pipe.annotate(
            image,
            caption,
            [objects],
            timesteps=(int(timestep),),
            noise_draws=int(noise_draws),
            generator=torch.Generator().manual_seed(0),
            capture_config=capture,
        )
        return self._result(image, caption, out, seed=0)

    def _result(self, image: Image.Image, prompt: str, out, seed: int) -> DemoResult:
        from datasets import Dataset

        from ..data.schema import encode_sample, mask_image, sample_features

        objects, masks, maps, boxes, confidence = (
            out.objects[0],
            out.masks[0],
            out.attention_maps[0],
            out.boxes[0],
            out.confidence[0],
        )
        folder = Path(tempfile.mkdtemp(dir=self.output_dir))
        files = []
        for i, (name, mask) in enumerate(zip(objects, masks)):
            path = folder / f"mask_{i}_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.png"
            mask_image(mask).save(path)
            files.append(str(path))
        row = encode_sample(image, prompt, objects, masks, maps, boxes, confidence, seed)
        Dataset.from_list([row], features=sample_features()).to_parquet(folder / "free_atm_sample.parquet")
        files.append(str(folder / "free_atm_sample.parquet"))
        scale = max(1, -(-DISPLAY_SIDE // max(image.size)))
        shown = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
        enlarged = masks.repeat(scale, axis=1).repeat(scale, axis=2)
        labels = confidence_labels(objects, confidence)
        overlay = overlay_masks(shown, enlarged, np.asarray(boxes, dtype=np.float32) * scale, labels)
        heatmaps = [(heatmap(soft, shown.size, shown), label) for soft, label in zip(maps, labels)]
        return DemoResult(image, shown, overlay, heatmaps, objects, masks, maps, boxes, confidence, files)
