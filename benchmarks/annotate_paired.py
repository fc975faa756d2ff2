"""Raw ``annotate`` masks of a shapes-world candidate against a baseline's, paired: the same rendered scenes,
the same noise, every raw capture setting of ``benchmarks/mask_quality.py``, and the standard error of each
difference over the objects. A difference of a few thousandths is told from noise in a minute or two on one
CPU thread, before the hour of ``mask_quality.py``.

    python benchmarks/annotate_paired.py --candidate ../runs/candidate [--baseline shapes] [--num-images 384]

One ``annotate`` call per batch keeps every layer's map at every level (``keep="layers_and_steps"``) and each
setting averages them (``KeptMaps.average``), as ``mask_quality.py`` does with generated images. The scenes,
levels, noise draws and seeds are that benchmark's real split, so its raw ``annotate`` figure is one row here
(the row of the raw setting it chose); settings that select none of the levels are left out.

Prints JSON, then ``setting=... baseline_miou=... candidate_miou=... difference=... standard_error=...
settings_lower=... settings=...`` for the setting where the baseline is best (``settings_lower``: the settings
where the candidate is lower by more than two standard errors).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from mask_quality import AGGREGATIONS, THRESHOLDS, annotate_scenes

from free_atm import CaptureConfig
from free_atm.evaluation.fidelity import REAL_SEED, cut_masks, object_ious, scenes_split
from free_atm.masks import normalize_maps
from free_atm.models import load_pipeline


def kept_annotations(pipe, scenes, timesteps, noise_draws: int, batch_size: int) -> list:
    """Every scene's maps per layer and level from ``pipe.annotate``, with the seeds of
    ``mask_quality.real_images_miou``."""
    config = CaptureConfig(keep="layers_and_steps")
    outputs = annotate_scenes(pipe, scenes, config, timesteps, noise_draws, batch_size)
    return [kept for out in outputs for kept in out.kept_maps]


def selects_a_level(overrides: dict, timesteps: list[int]) -> bool:
    """Whether an aggregation's step window (``timestep_range``, default all) holds one of ``timesteps``."""
    low, high = overrides.get("timestep_range", (0, 1000))
    return any(low <= t <= high for t in timesteps)


def setting_ious(kept: list, truths: list, aggregations: dict) -> dict[str, list[float]]:
    """Per ``"aggregation | threshold"``: the IoU of every object of the masks cut with it."""
    ious = {}
    for aggregation, overrides in aggregations.items():
        maps = [normalize_maps(torch.from_numpy(k.average(**overrides))) for k in kept]
        for cut, (method, threshold) in THRESHOLDS.items():
            ious[f"{aggregation} | {cut}"] = object_ious(cut_masks(maps, truths, method, threshold), truths)
    return ious


def paired_difference(baseline: list[float], candidate: list[float]) -> tuple[float, float]:
    """The mean of ``candidate - baseline`` object by object, and its standard error."""
    difference = np.asarray(candidate) - np.asarray(baseline)
    return float(difference.mean()), float(difference.std(ddof=1) / np.sqrt(len(difference)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", required=True, help="a shapes-world pipeline: name or folder")
    parser.add_argument("--baseline", default="shapes")
    parser.add_argument("--num-images", type=int, default=384)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[200, 400], help="annotate's noise levels")
    parser.add_argument("--noise-draws", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    if args.num_images < 2:  # a standard error needs two objects; one image may hold one
        parser.error(f"--num-images must be at least 2, got {args.num_images}")
    if args.noise_draws < 1 or args.batch_size < 1:
        parser.error(f"--noise-draws and --batch-size must be positive, got {args.noise_draws} and {args.batch_size}")
    if not all(0 <= t <= 1000 for t in args.timesteps):
        parser.error(f"--timesteps must lie in [0, 1000], got {args.timesteps}")
    aggregations = {name: o for name, o in AGGREGATIONS.items() if selects_a_level(o, args.timesteps)}
    started = time.time()
    scenes = scenes_split(REAL_SEED, args.num_images)
    truths = [scene.masks for scene in scenes]
    ious = {}
    for role in ("baseline", "candidate"):
        kept = kept_annotations(
            load_pipeline(getattr(args, role)), scenes, args.timesteps, args.noise_draws, args.batch_size
        )
        ious[role] = setting_ious(kept, truths, aggregations)
    table = {}
    for setting, baseline in ious["baseline"].items():
        difference, error = paired_difference(baseline, ious["candidate"][setting])
        table[setting] = {
            "baseline_miou": float(np.mean(baseline)),
            "candidate_miou": float(np.mean(ious["candidate"][setting])),
            "difference": difference,
            "standard_error": error,
        }
    best = max(table, key=lambda setting: table[setting]["baseline_miou"])
    lower = sum(row["difference"] < -2 * row["standard_error"] for row in table.values())
    result = {**vars(args), "objects": len(ious["baseline"][best]), "settings": table, "best_setting": best}
    print(json.dumps({**result, "seconds": round(time.time() - started, 1)}, indent=2))
    row = table[best]
    print(
        f"setting={best!r} baseline_miou={row['baseline_miou']:.4f} candidate_miou={row['candidate_miou']:.4f} "
        f"difference={row['difference']:+.4f} standard_error={row['standard_error']:.4f} "
        f"settings_lower={lower} settings={len(table)}"
    )


if __name__ == "__main__":
    main()
