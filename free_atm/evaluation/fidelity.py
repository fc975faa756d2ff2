"""Where a shapes-world generator fails: prompt fidelity broken down in the style of GenEval's categories.

Each generated image is judged against the scene whose caption prompted it (:func:`judge_image`):

* ``prompt_fidelity``: every named object found (its colour present, its region of the named kind),
  overall and per number of objects in the prompt;
* ``colour_present``: share of named objects whose colour is drawn;
* ``kind_given_colour``: of those, the share whose region has the named kind, also per named kind, per
  object size (:func:`object_size`) and over one-object prompts alone (where nothing occludes the shape);
* ``binding``: in prompts of two or more objects, of the named kinds that the image draws in one of the
  prompt's colours, the share drawn in their own colour ("a red star and a blue circle" drawn as a blue
  star and a red circle has both kinds, neither bound);
* ``found_object_miou`` (when masks are given): mean IoU of the masks of found objects against their
  colour regions: the quality of a mask when its object is there;
* ``confidence_auroc`` (when the masks' confidences are given): how well the confidence ranks the objects
  the judge finds (``drawn``: colour and kind) above those it does not, and (``colour_present``) the objects
  whose colour is drawn at all above those whose colour is missing.

:func:`word_influence` looks one step earlier, inside the UNet: whether a word of the caption changes what
it predicts at all (a model whose kind words score 0 draws the same blob for every kind).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..attention import CaptureConfig
from ..masks import maps_to_masks
from ..metrics import auroc, object_scores
from ..pixel_refinement import as_pixels
from ..seeds import derive_seed
from ..world.render import COLOURS, SHAPES, Scene, render_scene
from .judge import ShapeClassifier, colour_regions, judge_image

#: the seeds of the splits the benchmarks judge a shapes-world model on: settings are chosen on the selection
#: split and reported on the held-out one; the real split holds rendered scenes for ``annotate``
SELECTION_SEED, HELD_OUT_SEED, REAL_SEED = 5_000, 6_000, 7_000


def scenes_split(seed: int, count: int) -> list[Scene]:
    """The scenes ``derive_seed(seed, i)`` for ``i < count``: one split of captions and truths."""
    return [render_scene(derive_seed(seed, i)) for i in range(count)]


def draw_scenes(
    pipe,
    scenes: Sequence[Scene],
    capture_configs: dict[str, CaptureConfig | dict | None],
    steps: int = 20,
    guidance_scale: float = 5.0,
    batch_size: int = 16,
    **call_kwargs,
) -> tuple[list[np.ndarray], dict[str, list]]:
    """Generate one image per scene caption (noise seeded by the scene), capturing once per capture
    setting from the same noise: the uint8 images and, per setting, each image's pipeline output
    ``(attention_maps, masks, confidence, kept_maps)`` (``kept_maps`` ``None`` unless the setting keeps
    maps). ``call_kwargs`` go to every pipeline call."""
    images, captured = [], {name: [] for name in capture_configs}
    for start in range(0, len(scenes), batch_size):
        part = scenes[start : start + batch_size]
        latents = pipe.initial_latents([s.seed for s in part], *pipe.default_image_size)
        for name, config in capture_configs.items():
            out = pipe(
                [s.caption for s in part],
                objects=[s.objects for s in part],
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                latents=latents,
                output_type="np",
                capture_config=config,
                **call_kwargs,
            )
            kept = out.kept_maps or [None] * len(part)
            captured[name] += list(zip(out.attention_maps, out.masks, out.confidence, kept))
        images += [np.rint(image * 255).astype(np.uint8) for image in out.images]
    return images, captured


def colour_truths(images: Sequence[np.ndarray], scenes: Sequence[Scene]) -> list[np.ndarray]:
    """Per drawn image, the regions of its scene's named colours ``(M, H, W)``, in ``objects`` order: the
    truth a mask of a generated image is scored against."""
    return [np.stack([colour_regions(image)[c] for c in scene.colours]) for image, scene in zip(images, scenes)]


def cut_masks(
    maps: Sequence,
    truths: Sequence[np.ndarray],
    method: str,
    threshold: float,
    images: Sequence[np.ndarray] | None = None,
    pixel_refinement: int = 0,
) -> list[np.ndarray]:
    """The masks ``maps_to_masks(map, ..., method, threshold)`` cuts from each image's soft maps at its
    truth's size; with ``pixel_refinement``, along the ``images``."""
    return [
        maps_to_masks(
            torch.as_tensor(soft),
            truth.shape[-2:],
            method,
            threshold,
            image=None if images is None else as_pixels(images[i]),
            pixel_refinement=pixel_refinement,
        )[1]
        for i, (soft, truth) in enumerate(zip(maps, truths))
    ]


def object_ious(masks: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> list[float]:
    """The IoU of every object of every image's masks against its truths, image by image."""
    return [score for mask, truth in zip(masks, truths) for score in object_scores(mask, truth)[0]]


def masks_miou(masks: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> float:
    """Mean IoU over all objects of every image's masks against its truths."""
    return float(np.mean(object_ious(masks, truths)))


def _auroc(labels: Sequence[bool], scores: np.ndarray) -> float | None:
    return auroc(labels, scores) if 0 < sum(labels) < len(labels) else None


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


#: visible areas (pixels of a 64 px scene) that split objects into small, medium and large: the renderer's
#: radii run from 0.12 to 0.24 of the side, a circle's area from about 190 to 740 pixels
SIZE_LIMITS = {"small": 250, "medium": 450}


def object_size(area: int) -> str:
    """``"small"``, ``"medium"`` or ``"large"`` for an object of ``area`` visible pixels (:data:`SIZE_LIMITS`)."""
    return next((name for name, limit in SIZE_LIMITS.items() if area < limit), "large")


def fidelity_breakdown(
    images: Sequence[np.ndarray],
    scenes: Sequence[Scene],
    classifier: ShapeClassifier,
    masks: Sequence[np.ndarray] | None = None,
    confidence: Sequence[np.ndarray] | None = None,
) -> dict:
    """The breakdown of module :mod:`free_atm.evaluation.fidelity` for ``images[i]`` drawn from
    ``scenes[i].caption``; ``masks[i]`` (bool ``(M, H, W)``) and ``confidence[i]`` (``(M,)``), if given,
    are the pipeline's masks and their confidences. A category with nothing to count is ``None``."""
    given = {"masks": masks, "confidences": confidence}
    if len(images) != len(scenes) or any(v is not None and len(v) != len(images) for v in given.values()):
        counts = ", ".join(f"{'no' if v is None else len(v)} {name}" for name, v in given.items())
        raise ValueError(f"got {len(images)} images, {len(scenes)} scenes, {counts}")
    complete: dict[int, list[bool]] = {}
    colour, kind, binding, found_iou, alone, judged = [], [], [], [], [], []
    by_kind: dict[str, list[bool]] = {shape: [] for shape in SHAPES}
    by_size: dict[str, list[bool]] = {size: [] for size in (*SIZE_LIMITS, "large")}
    for i, (image, scene) in enumerate(zip(images, scenes)):
        judgement = judge_image(image, scene.colours, classifier)
        found = judgement.found(scene.shapes)
        judged += found
        complete.setdefault(len(scene.shapes), []).append(all(found))
        colour += judgement.colour_present
        for f, present, shape, truth in zip(found, judgement.colour_present, scene.shapes, scene.masks):
            if present:
                kind.append(f)
                by_kind[shape].append(f)
                by_size[object_size(int(truth.sum()))].append(f)
                if len(scene.shapes) == 1:
                    alone.append(f)
        if len(scene.shapes) > 1:
            drawn = {k for k in judgement.kinds if k is not None}
            binding += [f for f, shape in zip(found, scene.shapes) if shape in drawn]
        if masks is not None:
            ious = object_scores(masks[i], judgement.regions)[0]
            found_iou += [iou for iou, f in zip(ious, found) if f]
    every = [c for counts in complete.values() for c in counts]
    ranking = None
    if confidence is not None:
        scores = np.concatenate([np.asarray(c, np.float64).reshape(-1) for c in confidence])
        ranking = {name: _auroc(labels, scores) for name, labels in (("drawn", judged), ("colour_present", colour))}
    return {
        "prompt_fidelity": _mean(every),
        "prompt_fidelity_by_count": {n: _mean(complete[n]) for n in sorted(complete)},
        "colour_present": _mean(colour),
        "kind_given_colour": _mean(kind),
        "kind_given_colour_one_object": _mean(alone),
        "kind_given_colour_by_kind": {shape: _mean(found) for shape, found in by_kind.items()},
        "kind_given_colour_by_size": {size: _mean(found) for size, found in by_size.items()},
        "binding": _mean(binding),
        "found_object_miou": _mean(found_iou) if masks is not None else None,
        "confidence_auroc": ranking,
        "images": len(images),
    }


def _swap_first(caption: str, words: Sequence[str]) -> str:
    """``caption`` with its first word from ``words`` replaced by the next one of ``words``."""
    tokens = caption.split()
    at = next(i for i, token in enumerate(tokens) if token in words)
    tokens[at] = words[(list(words).index(tokens[at]) + 1) % len(words)]
    return " ".join(tokens)


@torch.no_grad()
def word_influence(
    pipe, scenes: Sequence[Scene], timesteps: Sequence[int] = (900, 500, 300), seed: int = 0
) -> dict[str, dict[int, float]]:
    """How far the UNet's prediction on each scene's own noised latents moves when the caption's first
    kind word ("star" to "cross") or first colour word is swapped, relative to the prediction's norm:
    ``{"kind": {t: change}, "colour": {t: change}}``, norms taken over all ``scenes`` together."""
    images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1
    vae, unet = pipe.vae, pipe.unet
    latents = vae.encode(images.to(pipe.device, vae.dtype)).latent_dist.mode() * vae.config.scaling_factor
    captions = {
        "same": [s.caption for s in scenes],
        "kind": [_swap_first(s.caption, SHAPES) for s in scenes],
        "colour": [_swap_first(s.caption, list(COLOURS)) for s in scenes],
    }
    states = {name: pipe.encode_prompt(text, pipe.device, 1, False)[0] for name, text in captions.items()}
    generator = torch.Generator().manual_seed(seed)
    influence: dict[str, dict[int, float]] = {"kind": {}, "colour": {}}
    for t in timesteps:
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        steps = torch.full((len(scenes),), t, device=pipe.device)
        noisy = pipe.scheduler.add_noise(latents, noise, steps)
        same = unet(noisy, steps, states["same"]).sample
        for word in influence:
            moved = unet(noisy, steps, states[word]).sample - same
            influence[word][t] = float(moved.norm() / same.norm())
    return influence
