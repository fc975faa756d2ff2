"""Mask quality of the shipped shapes model against exact ground truth.

* generated images: the truth is the region of each named colour in the generated pixels; mean IoU of
  the pipeline's masks per threshold method and per aggregation setting. The shipped defaults are
  chosen on a selection split and the figures reported on a separate held-out split.
* prompt fidelity: the share of generated images showing every named object (its colour as a region,
  its kind as judged by a classifier trained on rendered scenes), broken down by number of objects,
  colour, kind and binding (:mod:`free_atm.evaluation.fidelity`); the same judge on rendered scenes and on
  their VAE reconstructions gives the ceilings of the judge and of the generator's decoder.
* real images: ``pipe.annotate`` on rendered scenes, mean IoU against their exact masks.

    python benchmarks/mask_quality.py [--num-images 96] [--choose-sampling] [--save-defaults]

``--cache-dir DIR`` keeps each finished stage (a sampling candidate's judgement, one generation of a split,
one family's ``annotate`` score) in DIR: a run stopped midway goes on after its last finished stage when the
same command is run again.

With ``--choose-sampling`` the sampling settings come first: every guidance scale of
``--guidance-candidates`` with every scheduler of ``--scheduler-candidates`` draws the selection split, the
one whose images the judge finds most faithful (prompt fidelity, ties to one-object fidelity) samples the
rest of the benchmark, and ``--save-defaults`` saves it with the capture settings. Without it the model's
saved sampling settings are used, and ``--steps`` and ``--guidance-scale`` override them when given.

Four families of settings are chosen on the selection split separately and all reported on the held-out
split: raw maps, maps refined along the model's self-attention, masks refined along the image's pixels
(PAMR), and both; ``--save-defaults`` keeps the best. The shapes world's objects are flat colours, which
favours the pixel refinement far more than natural images would, so the self-attention family is also
reported on its own.

Prints JSON, then ``gen_miou=... real_miou=... refined_gen_miou=... refined_real_miou=...
self_attention_gen_miou=... self_attention_real_miou=... prompt_fidelity=... one_object_fidelity=...
found_object_miou=...`` (``refined_*``: the best refined family on the selection split).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from free_atm import CaptureConfig
from free_atm.diffusion.sampling import SamplingConfig
from free_atm.evaluation.fidelity import (
    HELD_OUT_SEED,
    REAL_SEED,
    SELECTION_SEED,
    colour_truths,
    cut_masks,
    draw_scenes,
    fidelity_breakdown,
    masks_miou,
    scenes_split,
    word_influence,
)
from free_atm.evaluation.judge import shape_classifier
from free_atm.masks import normalize_maps
from free_atm.models import load_pipeline
from free_atm.run_settings import check_run_settings, record_run_settings

AGGREGATIONS = {
    "all layers, all steps": {},
    "scale 1 (16x16)": {"layer_scales": (1,)},
    "scales 1+2": {"layer_scales": (1, 2)},
    "scale 2 (8x8)": {"layer_scales": (2,)},
    "t <= 500": {"timestep_range": (0, 500)},
    "t >= 500": {"timestep_range": (500, 1000)},
    "scale 1, t <= 500": {"layer_scales": (1,), "timestep_range": (0, 500)},
}
#: maps refined along the self-attention (:mod:`free_atm.attention.refinement`), every layer
REFINED = {
    f"refined, power {power}{window_name}": {
        "refinement": "self_attention",
        "refinement_power": power,
        **({"timestep_range": window} if window else {}),
    }
    for power in (1, 2)
    for window_name, window in (("", None), (", t <= 500", (0, 500)))
}
THRESHOLDS = {
    "fixed 0.4": ("fixed", 0.4),
    "fixed 0.5": ("fixed", 0.5),
    "otsu": ("otsu", 0.4),
    "competition 0.4": ("competition", 0.4),
}
#: iterations of pixel-adaptive refinement (:mod:`free_atm.pixel_refinement`) tried with every threshold
PIXEL_ITERATIONS = 10
CUTS = {
    **{name: (*spec, 0) for name, spec in THRESHOLDS.items()},
    **{f"{name}, pixels": (*spec, PIXEL_ITERATIONS) for name, spec in THRESHOLDS.items()},
}
#: the families of settings chosen separately: (aggregations, whether the masks follow the pixels)
FAMILIES = {
    "raw": (AGGREGATIONS, False),
    "self_attention": (REFINED, False),
    "pixels": (AGGREGATIONS, True),
    "self_attention+pixels": (REFINED, True),
}


class StageCache:
    """The finished stages of a run (each sampling candidate's judgement, each generation of a split, each
    family's ``annotate`` score), kept in ``--cache-dir`` so that a run stopped midway and rerun with the
    same command goes on after its last finished stage. Each stage is written whole or not at all (a
    temporary file renamed into place); the folder records the run's settings and refuses another run's."""

    def __init__(self, folder: str | None, settings: dict) -> None:
        self.folder = Path(folder) if folder else None
        if self.folder is None:
            return
        record = dict(settings=settings, record="settings.json")
        try:
            check_run_settings(self.folder, **record, option="--cache-dir", holds="the stages of a run")
        except ValueError as error:
            raise SystemExit(str(error)) from None
        record_run_settings(self.folder, **record)

    def get(self, stage: str, compute):
        """``stage``'s value: read back if a stage of that name is kept, else computed and kept."""
        if self.folder is None:
            return compute()
        path = self.folder / f"{hashlib.sha1(stage.encode()).hexdigest()[:16]}.pt"
        if path.is_file():
            return torch.load(path, weights_only=False)["value"]
        value = compute()
        temporary = path.with_suffix(".tmp")
        torch.save({"stage": stage, "value": value}, temporary)
        temporary.replace(path)
        return value


def generated_split(pipe, seed: int, count: int, steps: int, guidance: float, batch: int, cache: StageCache):
    """A split's scenes, generated images, colour-region truths and, per aggregation, the maps. One
    generation keeps every layer's map at every step, and each aggregation of :data:`AGGREGATIONS` is their
    average over its layers and steps (``KeptMaps.average``); each refinement needs a generation of its own.
    Each generation is a stage of ``cache``."""
    scenes = scenes_split(seed, count)
    draw = dict(steps=steps, guidance_scale=guidance, batch_size=batch)
    stage = f"split {seed} x {count}, {describe(pipe.sampling_config)}, drawn at {steps} steps, guidance {guidance}"

    def kept_maps() -> tuple[list[np.ndarray], dict[str, list[torch.Tensor]]]:
        images, captured = draw_scenes(pipe, scenes, {"kept": CaptureConfig(keep="layers_and_steps")}, **draw)
        kept = [k for *_, k in captured["kept"]]
        maps = {
            name: [normalize_maps(torch.from_numpy(k.average(**overrides))) for k in kept]
            for name, overrides in AGGREGATIONS.items()
        }
        return images, maps

    def refined_maps(name: str) -> list[torch.Tensor]:
        _, captured = draw_scenes(pipe, scenes, {name: CaptureConfig(**REFINED[name])}, **draw)
        return [torch.from_numpy(m) for m, *_ in captured[name]]

    images, maps = cache.get(f"{stage}: kept maps", kept_maps)
    maps |= {name: cache.get(f"{stage}: {name}", lambda name=name: refined_maps(name)) for name in REFINED}
    return scenes, images, colour_truths(images, scenes), maps


def best_setting(table: dict, family: str) -> tuple[tuple[str, str], CaptureConfig]:
    """The (aggregation, cut) of ``family`` with the highest mean IoU in ``table``, and its config."""
    aggregations, pixels = FAMILIES[family]
    cuts = [name for name, spec in CUTS.items() if bool(spec[2]) == pixels]
    best = max(((a, c) for a in aggregations for c in cuts), key=lambda key: table[key[0]][key[1]])
    method, threshold, iterations = CUTS[best[1]]
    config = CaptureConfig(
        **aggregations[best[0]], threshold_method=method, threshold=threshold, pixel_refinement=iterations
    )
    return best, config


def split_masks(maps: dict, truths, images, aggregation: str, cut: str) -> list[np.ndarray]:
    """The masks of one (aggregation, cut) on a split."""
    method, threshold, iterations = CUTS[cut]
    return cut_masks(maps[aggregation], truths, method, threshold, images, iterations)


def annotate_scenes(pipe, scenes, config: CaptureConfig, timesteps, noise_draws: int, batch_size: int) -> list:
    """``pipe.annotate`` on rendered scenes with their captions, ``batch_size`` at a time, each batch's noise
    seeded at its first index: one output per batch."""
    outputs = []
    for start in range(0, len(scenes), batch_size):
        part = scenes[start : start + batch_size]
        outputs.append(
            pipe.annotate(
                [Image.fromarray(s.image) for s in part],
                [s.caption for s in part],
                [s.objects for s in part],
                timesteps=timesteps,
                noise_draws=noise_draws,
                generator=torch.Generator().manual_seed(start),
                capture_config=config,
            )
        )
    return outputs


def real_images_miou(pipe, scenes, config: CaptureConfig, timesteps, noise_draws: int, batch_size: int) -> float:
    """``pipe.annotate`` on rendered scenes with their captions: mean IoU of the masks against the exact ones."""
    outputs = annotate_scenes(pipe, scenes, config, timesteps, noise_draws, batch_size)
    return masks_miou([mask for out in outputs for mask in out.masks], [scene.masks for scene in scenes])


@torch.no_grad()
def reconstructions(pipe, scenes) -> list[np.ndarray]:
    """Rendered scenes through the VAE and back: the best images the generator can draw."""
    pixels = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1
    pixels = pixels.to(pipe.device, pipe.vae.dtype)
    decoded = pipe.vae.decode(pipe.vae.encode(pixels).latent_dist.mode()).sample.float().clamp(-1, 1)
    return list(((decoded + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy())


def choose_sampling(
    pipe, count: int, batch: int, candidates: list[SamplingConfig], cache: StageCache
) -> tuple[SamplingConfig, dict]:
    """The candidate whose images of the selection split the judge finds most faithful, and every
    candidate's breakdown (each a stage of ``cache``). Each candidate is applied to ``pipe`` in turn; the
    chosen one is left applied."""
    scenes, classifier, judged = scenes_split(SELECTION_SEED, count), shape_classifier(), {}
    original = pipe.scheduler

    def judge(candidate: SamplingConfig) -> dict:
        pipe.scheduler = original
        pipe.set_sampling_config(candidate)
        images, _ = draw_scenes(
            pipe, scenes, {"raw": None}, candidate.num_inference_steps, candidate.guidance_scale, batch
        )
        return fidelity_breakdown(images, scenes, classifier)

    for candidate in candidates:
        name = describe(candidate)
        judged[name] = cache.get(f"sampling on {count} selection captions: {name}", lambda c=candidate: judge(c))

    def score(candidate: SamplingConfig) -> tuple:  # prompt fidelity, ties to one-object fidelity
        breakdown = judged[describe(candidate)]
        return breakdown["prompt_fidelity"], breakdown["prompt_fidelity_by_count"].get(1) or 0.0

    best = max(candidates, key=score)
    pipe.scheduler = original
    pipe.set_sampling_config(best)
    return best, judged


def describe(sampling: SamplingConfig) -> str:
    """``"ddim/trailing, guidance 9.0, 20 steps"``."""
    scheduler = f"{sampling.scheduler or 'saved'}/{sampling.timestep_spacing or 'saved'}"
    return f"{scheduler}, guidance {sampling.guidance_scale}, {sampling.num_inference_steps} steps"


def save_defaults(folder: Path, config: CaptureConfig, sampling: SamplingConfig | None) -> None:
    """Write ``config`` as the capture settings (and ``sampling``, if chosen, as the sampling settings) in
    ``folder``'s ``model_index.json``, and nothing else (the pipeline's own ``save_config`` would also
    record where and through which custom pipeline it was loaded). The scheduler folder stays as it is:
    the pipeline rebuilds the saved scheduler from it when it loads."""
    index = folder / "model_index.json"
    values = json.loads(index.read_text())
    values["capture_config"] = config.to_dict()
    if sampling is not None:
        values["sampling_config"] = sampling.to_dict()
    temporary = index.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    temporary.replace(index)  # atomic: an interrupted write leaves the old settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--num-images", type=int, default=96, help="per split")
    parser.add_argument("--steps", type=int, help="default: the model's saved setting, else 20")
    parser.add_argument("--guidance-scale", type=float, help="default: the model's saved setting, else 5")
    parser.add_argument("--choose-sampling", action="store_true", help="choose guidance and scheduler first")
    parser.add_argument("--guidance-candidates", type=float, nargs="+", default=[5.0, 7.0, 9.0, 13.0])
    parser.add_argument(
        "--scheduler-candidates",
        nargs="+",
        default=["ddim:leading", "ddim:trailing", "dpm_solver_2m:trailing", "euler:trailing"],
        help="SCHEDULER:SPACING pairs (free_atm.diffusion.sampling)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--annotate-timesteps", type=int, nargs="+", default=[200, 400])
    parser.add_argument("--noise-draws", type=int, default=2)
    parser.add_argument("--save-defaults", action="store_true", help="write the chosen defaults into the model")
    parser.add_argument(
        "--cache-dir", help="keep each finished stage here; a rerun of the same command goes on after the last one"
    )
    args = parser.parse_args()
    started = time.time()
    recorded = ("model", "num_images", "batch_size", "annotate_timesteps", "noise_draws")
    cache = StageCache(args.cache_dir, {name: getattr(args, name) for name in recorded})
    pipe = load_pipeline(args.model)
    folder = pipe.config.get("_name_or_path")
    if args.save_defaults and not (folder and Path(folder).is_dir()):
        raise SystemExit(f"--save-defaults needs a model loaded from a local folder; {args.model!r} was not")
    saved = pipe.sampling_config
    steps = args.steps or saved.num_inference_steps or 20
    sampling, sampling_table = None, None
    if args.choose_sampling:
        candidates = [
            SamplingConfig(guidance_scale=g, num_inference_steps=steps, scheduler=s, timestep_spacing=t)
            for g in args.guidance_candidates
            for s, t in (pair.split(":") for pair in args.scheduler_candidates)
        ]
        sampling, sampling_table = choose_sampling(pipe, args.num_images, args.batch_size, candidates, cache)
    guidance = sampling.guidance_scale if sampling else args.guidance_scale or saved.guidance_scale or 5.0
    split = dict(count=args.num_images, steps=steps, guidance=guidance, batch=args.batch_size, cache=cache)

    _, images, truths, maps = generated_split(pipe, SELECTION_SEED, **split)
    table = {
        agg: {cut: masks_miou(split_masks(maps, truths, images, agg, cut), truths) for cut in CUTS}
        for agg in {**AGGREGATIONS, **REFINED}
    }
    chosen = {family: best_setting(table, family) for family in FAMILIES}
    selection = {family: table[aggregation][cut] for family, ((aggregation, cut), _) in chosen.items()}
    best_family = max(selection, key=selection.get)
    refined_family = max((family for family in selection if family != "raw"), key=selection.get)

    scenes, images, truths, maps = generated_split(pipe, HELD_OUT_SEED, **split)
    held_out_masks = {family: split_masks(maps, truths, images, *setting) for family, (setting, _) in chosen.items()}
    held_out_gen = {family: masks_miou(masks, truths) for family, masks in held_out_masks.items()}
    defaults = chosen[best_family][1]
    classifier = shape_classifier()
    breakdown = fidelity_breakdown(images, scenes, classifier, held_out_masks[best_family])
    real = scenes_split(REAL_SEED, args.num_images)
    judge_on_real = fidelity_breakdown([s.image for s in real], real, classifier)
    judge_on_vae = fidelity_breakdown(reconstructions(pipe, real), real, classifier)
    influence = word_influence(pipe, real[:32])
    annotate = dict(timesteps=args.annotate_timesteps, noise_draws=args.noise_draws, batch_size=args.batch_size)
    held_out_real = {
        family: cache.get(
            f"annotate {args.num_images} real scenes: {json.dumps(config.to_dict(), sort_keys=True)}",
            lambda config=config: real_images_miou(pipe, real, config, **annotate),
        )
        for family, (_, config) in chosen.items()
    }
    gen_miou, real_miou = held_out_gen["raw"], held_out_real["raw"]
    refined_gen_miou, refined_real_miou = held_out_gen[refined_family], held_out_real[refined_family]

    if args.save_defaults:  # into the folder the pipeline was loaded from (the shipped model's, for shapes)
        save_defaults(Path(folder), defaults, sampling)
    result = {
        "model": args.model,
        "images_per_split": args.num_images,
        "steps": steps,
        "guidance_scale": guidance,
        "sampling": pipe.sampling_config.to_dict(),
        "scheduler": type(pipe.scheduler).__name__,
        "sampling_selection": sampling_table,
        "selection_miou_table": table,
        "chosen": {family: config.to_dict() for family, (_, config) in chosen.items()},
        "chosen_refined_family": refined_family,
        "chosen_defaults": defaults.to_dict(),
        "held_out": {"gen_miou": held_out_gen, **breakdown},
        "judge_on_rendered_scenes": judge_on_real,
        "judge_on_vae_reconstructions": judge_on_vae,
        "word_influence": influence,
        "real": {"miou": held_out_real, "timesteps": args.annotate_timesteps, "noise_draws": args.noise_draws},
        "seconds": round(time.time() - started, 1),
    }
    print(json.dumps(result, indent=2))
    print(
        f"gen_miou={gen_miou:.3f} real_miou={real_miou:.3f} refined_gen_miou={refined_gen_miou:.3f} "
        f"refined_real_miou={refined_real_miou:.3f} self_attention_gen_miou={held_out_gen['self_attention']:.3f} "
        f"self_attention_real_miou={held_out_real['self_attention']:.3f} "
        f"prompt_fidelity={breakdown['prompt_fidelity']:.3f} "
        f"one_object_fidelity={breakdown['prompt_fidelity_by_count'].get(1, float('nan')):.3f} "
        f"kind_given_colour_one_object={breakdown['kind_given_colour_one_object'] or float('nan'):.3f} "
        f"found_object_miou={breakdown['found_object_miou'] or float('nan'):.3f} "
        f"kind_influence={influence['kind'][500]:.4f} colour_influence={influence['colour'][500]:.4f}"
    )


if __name__ == "__main__":
    main()
