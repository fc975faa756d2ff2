"""Export speed and memory: ``free-atm export`` of 64 px datasets of two sizes, every format.

    python benchmarks/export_speed.py [--sizes 1000 2000] [--shard-size 256]

Each export runs as its own process (what a user runs), timed from launch to exit; its peak memory is the
child's maximum resident set. Memory flat in the dataset's size means the larger dataset's peak is no
higher than the smaller one's. The datasets are rendered shapes-world scenes with their exact masks.

Prints JSON, then ``coco_s_per_1000=... yolo_s_per_1000=... voc_s_per_1000=... peak_mb=...
peak_growth_mb=...`` (seconds per 1,000 images on the largest size; peak growth from the smallest to the
largest, the worst format).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from free_atm.data import sample_features
from free_atm.data.schema import encode_sample
from free_atm.data.shards import ShardPlan, write_shard
from free_atm.masks import mask_boxes
from free_atm.seeds import derive_seed
from free_atm.world import render_scene

FORMATS = ("coco", "yolo", "voc")


def write_dataset(root: Path, size: int, shard_size: int) -> None:
    """``size`` rendered scenes as a free-atm dataset in ``root``."""
    plan = ShardPlan(size, shard_size)
    for shard in range(plan.num_shards):
        rows = []
        for index in plan.indices(shard):
            scene = render_scene(derive_seed(21, index))
            soft = np.zeros((len(scene.masks), 16, 16))
            boxes = mask_boxes(scene.masks)
            rows.append(encode_sample(Image.fromarray(scene.image), scene.caption, scene.objects, scene.masks, soft,
                                      boxes, index))  # fmt: skip
        write_shard(rows, sample_features(), plan.path(root, shard))


def timed_export(dataset: Path, fmt: str, out: Path) -> tuple[float, float]:
    """Seconds and peak resident megabytes of one ``free-atm export`` process."""
    command = [sys.executable, "-m", "free_atm", "export", str(dataset), "--format", fmt, "--out", str(out)]
    script = (
        "import resource, subprocess, sys, time; started = time.time(); "
        f"code = subprocess.run({command!r}).returncode; seconds = time.time() - started; "
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024; "
        "print(seconds, peak); sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ)
    if done.returncode:
        raise SystemExit(f"export failed: {done.stderr[-2000:]}")
    seconds, peak = done.stdout.splitlines()[-1].split()  # after the command's own line
    return float(seconds), float(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--shard-size", type=int, default=256)
    args = parser.parse_args()
    if any(size < 1 for size in args.sizes) or args.shard_size < 1:
        parser.error(f"--sizes and --shard-size must be positive, got {args.sizes} and {args.shard_size}")
    sizes = sorted(args.sizes)
    results: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        for size in sizes:
            dataset = Path(scratch) / f"dataset-{size}"
            write_dataset(dataset, size, args.shard_size)
            for fmt in FORMATS:
                seconds, peak = timed_export(dataset, fmt, Path(scratch) / f"{fmt}-{size}")
                results.setdefault(fmt, {})[size] = {
                    "seconds": round(seconds, 2),
                    "seconds_per_1000": round(seconds / size * 1000, 2),
                    "peak_mb": round(peak, 1),
                }
    largest, smallest = sizes[-1], sizes[0]
    growth = max(results[f][largest]["peak_mb"] - results[f][smallest]["peak_mb"] for f in FORMATS)
    print(
        json.dumps(
            {"sizes": sizes, "shard_size": args.shard_size, "results": results, "cpu": os.cpu_count()}, indent=2
        )
    )
    per_1000 = " ".join(f"{f}_s_per_1000={results[f][largest]['seconds_per_1000']:.2f}" for f in FORMATS)
    peak = max(results[f][largest]["peak_mb"] for f in FORMATS)
    print(f"{per_1000} peak_mb={peak:.0f} peak_growth_mb={growth:.1f}")


if __name__ == "__main__":
    main()
