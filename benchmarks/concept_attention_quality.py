"""Raw joint-attention maps against ConceptAttention's output-space maps, on an MM-DiT that has learned to
draw, against exact truth.

No pretrained MM-DiT can be downloaded here, so the benchmark first trains one: a small Stable Diffusion 3
on the shapes world (:mod:`free_atm.models.shapes.mmdit`: the shipped model's VAE and word codes, a 4-block
joint-attention transformer), rectified flow as SD3 trains it (logit-normal times, velocity target,
caption dropout for guidance), with an exponential moving average of the weights; ``--region-weight`` adds
the region loss of its joint blocks (each image token's attention to the image kept in its own object,
:mod:`free_atm.models.shapes.joint_regions`), which self-attention refinement relies on. Training checkpoints
into ``--work-dir`` and resumes from there; a finished transformer is reused, and a larger
``--train-steps`` goes on from the last checkpoint.

Then it draws held-out captions (the split of ``mask_quality.py``) once per capture setting from the same
noise and scores each setting's masks against the regions of the named colours in the drawn pixels:
the raw maps (columns of the joint softmax; renormalised over the text keys) and the output-space maps,
over all four blocks and over the last two (ConceptAttention reads a model's later blocks), each through
the fixed, Otsu and competition thresholds; the generator's prompt fidelity says how well it draws at all.

The self-attention refinement (the image-to-image part of each counted block's joint softmax) is chosen
among :data:`REFINED` on the selection split and reported on the held-out one. ``annotate`` runs on the
rendered scenes themselves against their exact masks: the noise level(s) of :data:`ANNOTATE_TIMESTEPS`, raw
or with the chosen refinement, chosen on the selection split's scenes and reported on those of the real
split; and with the objects as words the caption lacks (an empty caption; concept tokens through every
block) at the chosen level.

    python benchmarks/concept_attention_quality.py [--train-steps 2500] [--num-images 96] [--region-weight 0.1]

Prints JSON, then ``attention_miou=<best threshold> text_norm_miou=<..> concept_miou=<..>
attention_late_miou=<..> concept_late_miou=<..> refined_miou=<..> annotate_miou=<..> concept_token_miou=<..>
prompt_fidelity=<..>``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import SD3Transformer2DModel
from PIL import Image

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
)
from free_atm.evaluation.judge import shape_classifier
from free_atm.models.shapes.grounding import region_loss_from_shares
from free_atm.models.shapes.joint_regions import JointRegionAttnProcessor
from free_atm.models.shapes.mmdit import shapes_sd3_pipeline, shapes_sd3_transformer
from free_atm.seeds import derive_seed
from free_atm.world.render import render_scene

CAPTURES = {
    "attention": {},
    "text_norm": {"normalization": "text"},
    "concept": {"method": "concept"},
    # ConceptAttention reads Flux's later blocks; here the last two of four
    "attention_late": {"blocks": (2, 3)},
    "concept_late": {"method": "concept", "blocks": (2, 3)},
}
#: refinement settings chosen among on the selection split
REFINED = {
    "refined": {"refinement": "self_attention"},
    "refined_power2": {"refinement": "self_attention", "refinement_power": 2},
    "refined_late": {"refinement": "self_attention", "blocks": (2, 3)},
    "refined_t600": {"refinement": "self_attention", "timestep_range": (0, 600)},
}
#: the noise levels (0-1000, sigma = t / 1000) annotate is tried at
ANNOTATE_TIMESTEPS = {"t250": (250,), "t500": (500,), "t750": (750,), "t250+500+750": (250, 500, 750)}
THRESHOLDS = {"fixed 0.4": ("fixed", 0.4), "otsu": ("otsu", 0.4), "competition 0.4": ("competition", 0.4)}
TRAIN_SEED = 0
#: no T5: the image attends to the 24 CLIP positions only (as in training)
CALL = {"max_sequence_length": 0}


@torch.no_grad()
def training_set(pipe, count: int, cache: Path) -> dict[str, torch.Tensor]:
    """Scaled latents, caption states and pooled vectors of ``count`` rendered scenes, and those of the
    empty caption, with the scenes' object masks (area-resized to the latent grid) and which objects are
    real; computed once and cached."""
    if cache.exists() and "masks" in (data := torch.load(cache)):
        return data
    scenes = [render_scene(derive_seed(TRAIN_SEED, i)) for i in range(count)]
    most = max(len(s.objects) for s in scenes)
    masks, valid = torch.zeros(count, most, 16, 16), torch.zeros(count, most, dtype=torch.bool)
    for i, scene in enumerate(scenes):
        drawn = torch.from_numpy(np.asarray(scene.masks, dtype=np.float32))
        masks[i, : len(drawn)] = torch.nn.functional.adaptive_avg_pool2d(drawn, 16)
        valid[i, : len(drawn)] = True
    latents, states, pooled = [], [], []
    for start in range(0, count, 256):
        part = scenes[start : start + 256]
        pixels = torch.from_numpy(np.stack([s.image for s in part])).permute(0, 3, 1, 2).float() / 127.5 - 1
        latents.append(pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor)
        captions = [s.caption for s in part]
        text, _, vector, _ = pipe.encode_prompt(captions, None, None, do_classifier_free_guidance=False, **CALL)
        states.append(text)
        pooled.append(vector)
    empty, _, empty_pooled, _ = pipe.encode_prompt([""], None, None, do_classifier_free_guidance=False, **CALL)
    data = {
        "latents": torch.cat(latents),
        "states": torch.cat(states),
        "pooled": torch.cat(pooled),
        "empty_states": empty,
        "empty_pooled": empty_pooled,
        "masks": masks,
        "valid": valid,
    }
    torch.save(data, cache.with_suffix(".tmp"))
    cache.with_suffix(".tmp").replace(cache)
    return data


def train(pipe, data: dict[str, torch.Tensor], args, work: Path) -> SD3Transformer2DModel:
    """Rectified-flow training of the pipeline's transformer, plus ``--region-weight`` times the region loss
    of its joint blocks (:mod:`free_atm.models.shapes.joint_regions`); returns the averaged weights."""
    recipe = f"_region{args.region_weight:g}" if args.region_weight else ""
    final = work / f"transformer_{args.train_steps}{recipe}"
    if final.exists():
        return SD3Transformer2DModel.from_pretrained(final)
    model = pipe.transformer.train()
    ema = torch.optim.swa_utils.get_ema_multi_avg_fn(0.999)
    average = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema)  # keeps the stock processors
    shares: list = []
    regions = JointRegionAttnProcessor(shares)
    if args.region_weight:
        model.set_attn_processor(regions)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 100))
    checkpoint, step = work / f"checkpoint{recipe}.pt", 0
    generator = torch.Generator().manual_seed(args.seed)
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        for part, key in ((model, "model"), (average, "average"), (optimizer, "optimizer"), (warmup, "warmup")):
            part.load_state_dict(state[key])
        generator.set_state(state["generator"])
        step = state["step"]
    count, started, losses, grouped = len(data["latents"]), time.time(), [], []
    while step < args.train_steps:
        index = torch.randint(count, (args.batch_size,), generator=generator)
        clean = data["latents"][index]
        states, pooled = data["states"][index].clone(), data["pooled"][index].clone()
        dropped = torch.rand(args.batch_size, generator=generator) < 0.1
        states[dropped], pooled[dropped] = data["empty_states"], data["empty_pooled"]
        sigma = torch.sigmoid(torch.randn(args.batch_size, generator=generator))  # SD3's logit-normal times
        noise = torch.randn(clean.shape, generator=generator)
        noisy = (1 - sigma.view(-1, 1, 1, 1)) * clean + sigma.view(-1, 1, 1, 1) * noise
        if args.region_weight:  # a dropped caption names no object: all background, nothing to group
            regions.set_regions(data["masks"][index], data["valid"][index] & ~dropped[:, None])
        velocity = model(noisy, encoder_hidden_states=states, pooled_projections=pooled, timestep=sigma * 1000).sample
        loss = torch.nn.functional.mse_loss(velocity, noise - clean)
        if args.region_weight:
            region = region_loss_from_shares(shares)
            loss, grouped = loss + args.region_weight * region, grouped + [region.item()]
            shares.clear()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        warmup.step()
        average.update_parameters(model)
        step, losses = step + 1, losses + [loss.item()]
        if step % 100 == 0 or step == args.train_steps:
            region = f", region loss {np.mean(grouped):.4f}" if grouped else ""
            print(f"step {step}: loss {np.mean(losses):.4f}{region} ({time.time() - started:.0f} s)", flush=True)
            losses, grouped = [], []
            state = {"model": model, "average": average, "optimizer": optimizer, "warmup": warmup}
            state = {key: part.state_dict() for key, part in state.items()}
            torch.save({**state, "generator": generator.get_state(), "step": step}, checkpoint.with_suffix(".tmp"))
            checkpoint.with_suffix(".tmp").replace(checkpoint)
    average.module.eval().save_pretrained(final)
    return average.module


def miou_by_threshold(maps: list, truths: list[np.ndarray]) -> dict[str, float]:
    """Mean IoU of the masks each threshold of :data:`THRESHOLDS` cuts from ``maps``."""
    return {name: masks_miou(cut_masks(maps, truths, *spec), truths) for name, spec in THRESHOLDS.items()}


def annotated_maps(pipe, scenes, timesteps, capture: dict, absent: bool = False) -> list[np.ndarray]:
    """``pipe.annotate``'s soft maps of the rendered scenes with their captions (``absent``: an empty caption and
    the objects as words it lacks), one noise draw per level, each image's noise its own."""
    # the levels are the window: a refinement chosen with a timestep window keeps its other settings
    capture = {key: value for key, value in capture.items() if key != "timestep_range"}
    maps = []
    for start in range(0, len(scenes), 16):
        part = scenes[start : start + 16]
        out = pipe.annotate(
            [Image.fromarray(s.image) for s in part],
            ["" if absent else s.caption for s in part],
            [s.objects for s in part],
            timesteps=timesteps,
            generator=[torch.Generator().manual_seed(s.seed) for s in part],
            capture_config=capture,
            allow_absent_objects=absent,
            **CALL,
        )
        maps += out.attention_maps
    return maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=Path("outputs/shapes_sd3"))
    parser.add_argument("--train-scenes", type=int, default=8000)
    parser.add_argument("--train-steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument(
        "--region-weight", type=float, default=0.0, help="weight of the joint blocks' region loss (0: denoising only)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-images", type=int, default=96)
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    args = parser.parse_args()
    if args.train_steps <= 0 or args.train_scenes <= 0:
        parser.error(f"--train-steps and --train-scenes must be positive, got {args.train_steps}, {args.train_scenes}")
    if not (math.isfinite(args.region_weight) and args.region_weight >= 0):
        parser.error(f"--region-weight must be a finite number, 0 or more, got {args.region_weight}")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    pipe = shapes_sd3_pipeline(shapes_sd3_transformer(seed=args.seed))
    data = training_set(pipe, args.train_scenes, args.work_dir / f"training_set_{args.train_scenes}.pt")
    pipe.transformer = train(pipe, data, args, args.work_dir)
    pipe.set_progress_bar_config(disable=True)
    trained = time.time()

    draw = dict(steps=args.steps, guidance_scale=args.guidance_scale, **CALL)
    selection = scenes_split(SELECTION_SEED, args.num_images)
    images, captured = draw_scenes(pipe, selection, {"attention": {}, **REFINED}, **draw)
    truths = colour_truths(images, selection)
    selection_table = {name: miou_by_threshold([m for m, *_ in out], truths) for name, out in captured.items()}
    refined = max(REFINED, key=lambda name: max(selection_table[name].values()))

    scenes = scenes_split(HELD_OUT_SEED, args.num_images)
    images, captured = draw_scenes(pipe, scenes, {**CAPTURES, refined: REFINED[refined]}, **draw)
    truths = colour_truths(images, scenes)
    table = {capture: miou_by_threshold([m for m, *_ in out], truths) for capture, out in captured.items()}
    breakdown = fidelity_breakdown(images, scenes, shape_classifier())
    best = {capture: max(row.values()) for capture, row in table.items()}

    exact = [s.masks for s in selection]
    annotate_table = {
        (level, family): miou_by_threshold(annotated_maps(pipe, selection, levels, capture), exact)
        for level, levels in ANNOTATE_TIMESTEPS.items()
        for family, capture in (("raw", {}), (refined, REFINED[refined]))
    }
    (level, family), row = max(annotate_table.items(), key=lambda item: max(item[1].values()))
    threshold = max(row, key=row.get)
    capture = {} if family == "raw" else REFINED[refined]
    real = scenes_split(REAL_SEED, args.num_images)
    real_exact = [s.masks for s in real]
    annotate_miou = miou_by_threshold(annotated_maps(pipe, real, ANNOTATE_TIMESTEPS[level], capture), real_exact)
    concept_maps = annotated_maps(pipe, real, ANNOTATE_TIMESTEPS[level], capture, absent=True)
    concept_token_miou = miou_by_threshold(concept_maps, real_exact)
    result = {
        "model": "shapes SD3 (MM-DiT, 4 joint blocks, width 128), trained here",
        "train_steps": args.train_steps,
        "batch_size": args.batch_size,
        "train_scenes": args.train_scenes,
        "region_weight": args.region_weight,
        "images": args.num_images,
        "sampling_steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "miou_table": table,
        "best_threshold_miou": best,
        "refinement_chosen_on_selection": {"name": refined, "capture": REFINED[refined]},
        "selection_miou_table": selection_table,
        "annotate": {
            "selection_table": {f"{lv} {fam}": row for (lv, fam), row in annotate_table.items()},
            "chosen": {"timesteps": ANNOTATE_TIMESTEPS[level], "capture": capture, "threshold": threshold},
            "held_out_miou": annotate_miou[threshold],
            "concept_tokens_held_out_miou": concept_token_miou[threshold],
        },
        "generator": breakdown,
        "seconds": {"training": round(trained - started, 1), "evaluation": round(time.time() - trained, 1)},
    }
    print(json.dumps(result, indent=2))
    print(
        f"attention_miou={best['attention']:.3f} text_norm_miou={best['text_norm']:.3f} "
        f"concept_miou={best['concept']:.3f} attention_late_miou={best['attention_late']:.3f} "
        f"concept_late_miou={best['concept_late']:.3f} refined_miou={best[refined]:.3f} "
        f"annotate_miou={annotate_miou[threshold]:.3f} concept_token_miou={concept_token_miou[threshold]:.3f} "
        f"prompt_fidelity={breakdown['prompt_fidelity']:.3f}"
    )


if __name__ == "__main__":
    main()
