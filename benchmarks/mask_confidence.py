"""How well a mask's confidence tells the objects a model drew from those it did not, on the shapes world.

Draws the selection and held-out splits of ``benchmarks/mask_quality.py`` with the model's saved sampling
and capture settings, and judges every named object (:mod:`free_atm.evaluation.fidelity`): ``drawn`` (its
colour present and its region of the named kind, the judge's verdict) and ``colour_present`` (its colour
drawn at all). Reports on the held-out split the AUROC of the confidence for both (``fidelity_breakdown``'s
``confidence_auroc``), the ``--min-confidence`` cut chosen on the selection split (a multiple of 0.05 with
the largest Youden's J, true-positive minus false-positive rate, for ``drawn``, and the same for
``colour_present``), and what each cut keeps of the held-out objects and rows.

    python benchmarks/mask_confidence.py [--num-images 384] [--threads 1]

Prints JSON, then ``confidence_auroc_drawn=... confidence_auroc_colour_present=... min_confidence_drawn=...
min_confidence_colour_present=...``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from free_atm.evaluation.fidelity import HELD_OUT_SEED, SELECTION_SEED, draw_scenes, fidelity_breakdown, scenes_split
from free_atm.evaluation.judge import judge_image, shape_classifier
from free_atm.models import load_pipeline

CUTS = np.round(np.arange(0.0, 1.0, 0.05), 2)


def judged_split(pipe, seed: int, count: int, steps: int, guidance: float, batch: int, classifier) -> dict:
    """A split drawn with the model's saved capture settings: its scenes, images, masks and confidences, and per
    object whether the judge finds it ``drawn`` and its ``colour_present``."""
    scenes = scenes_split(seed, count)
    images, captured = draw_scenes(pipe, scenes, {"saved": None}, steps, guidance, batch)
    masks = [masks for _, masks, *_ in captured["saved"]]
    confidence = [confidence for _, _, confidence, _ in captured["saved"]]
    drawn, present = [], []
    for image, scene in zip(images, scenes):
        judgement = judge_image(image, scene.colours, classifier)
        drawn += judgement.found(scene.shapes)
        present += judgement.colour_present
    return {
        "scenes": scenes,
        "images": images,
        "masks": masks,
        "confidence": confidence,
        "drawn": np.array(drawn),
        "colour_present": np.array(present),
    }


def youden_cut(labels: np.ndarray, scores: np.ndarray) -> float:
    """The cut of :data:`CUTS` with the largest true-positive rate minus false-positive rate (0 when the split
    holds one class only: nothing to separate)."""
    if labels.all() or not labels.any():
        return 0.0
    return float(max(CUTS, key=lambda c: (scores[labels] >= c).mean() - (scores[~labels] >= c).mean()))


def operating_point(split: dict, cut: float) -> dict:
    """What ``--min-confidence cut`` keeps of a split: objects (``--drop-objects``) and rows, and how many of the
    kept and dropped objects are drawn and have their colour."""
    scores = np.concatenate(split["confidence"])
    kept = scores >= cut
    point = {"cut": cut, "objects_kept": float(kept.mean())}
    point["rows_kept"] = float(np.mean([bool((c >= cut).all()) for c in split["confidence"]]))
    for name in ("drawn", "colour_present"):
        labels = split[name]
        point[f"{name}_among_kept"] = float(labels[kept].mean()) if kept.any() else None
        point[f"{name}_among_dropped"] = float(labels[~kept].mean()) if (~kept).any() else None
    return point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--num-images", type=int, default=384, help="per split")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.num_images < 2:
        raise SystemExit(f"--num-images must be at least 2, got {args.num_images}")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    pipe = load_pipeline(args.model)
    saved = pipe.sampling_config
    draw = dict(
        count=args.num_images,
        steps=saved.num_inference_steps or 20,
        guidance=saved.guidance_scale or 5.0,
        batch=args.batch_size,
        classifier=shape_classifier(),
    )
    selection = judged_split(pipe, SELECTION_SEED, **draw)
    held_out = judged_split(pipe, HELD_OUT_SEED, **draw)
    scores = np.concatenate(selection["confidence"])
    cuts = {name: youden_cut(selection[name], scores) for name in ("drawn", "colour_present")}
    breakdown = fidelity_breakdown(
        held_out["images"], held_out["scenes"], draw["classifier"], held_out["masks"], held_out["confidence"]
    )
    auroc = breakdown["confidence_auroc"]
    result = {
        "model": args.model,
        "images_per_split": args.num_images,
        "steps": draw["steps"],
        "guidance_scale": draw["guidance"],
        "capture_config": pipe.capture_config.to_dict(),
        "held_out_objects": int(held_out["drawn"].size),
        "held_out_drawn": int(held_out["drawn"].sum()),
        "held_out_colour_present": int(held_out["colour_present"].sum()),
        "held_out_confidence_auroc": auroc,
        "cuts_chosen_on_selection": cuts,
        "held_out_at_cut": {name: operating_point(held_out, cut) for name, cut in cuts.items()},
        "seconds": round(time.time() - started, 1),
    }
    print(json.dumps(result, indent=2))
    drawn, present = (float("nan") if auroc[k] is None else auroc[k] for k in ("drawn", "colour_present"))
    print(
        f"confidence_auroc_drawn={drawn:.3f} confidence_auroc_colour_present={present:.3f} "
        f"min_confidence_drawn={cuts['drawn']:.2f} min_confidence_colour_present={cuts['colour_present']:.2f}"
    )


if __name__ == "__main__":
    main()
