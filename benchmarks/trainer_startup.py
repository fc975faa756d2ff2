"""Startup time of the shapes trainer on cached scenes: from launching the process to its first UNet step.

The first run in ``--output-dir`` renders the scenes and caches them with their latents and caption tokens
(minutes for 100,000 scenes on a small CPU); every later run, a resumed one included, starts from those
caches. This benchmark makes the caches if they are missing, then times ``--runs`` fresh processes that
each start, take one step and stop at their deadline.

    python benchmarks/trainer_startup.py [--num-scenes 100000] [--output-dir outputs/startup-benchmark]

Prints JSON, then ``startup_seconds=<median, process launch to first step>`` (target at most 10) and
``in_process_seconds=<median, after the imports>``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAINER = ROOT / "trainers" / "train_shapes_diffusion.py"


def launch(output_dir: Path, num_scenes: int, workers: int) -> tuple[float, float]:
    """Run the trainer until its first UNet step; the seconds from launch, and those it reports itself."""
    command = [
        *(sys.executable, str(TRAINER), "--output_dir", str(output_dir), "--num_scenes", str(num_scenes)),
        *("--init_from", str(ROOT / "free_atm" / "models" / "shapes" / "default_model"), "--fresh_unet"),
        *("--unet_steps", "1000000", "--eval_every", "0", "--render_workers", str(workers)),
    ]
    launched = time.time()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in process.stdout:
            if '"startup_seconds"' in line:
                return time.time() - launched, json.loads(line)["startup_seconds"]
    finally:
        process.kill()
        process.wait()
    raise SystemExit(f"the trainer ended before its first step: {' '.join(command)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-scenes", type=int, default=100_000)
    parser.add_argument("--output-dir", default="outputs/startup-benchmark", help="holds the caches between runs")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--render-workers", type=int, default=2)
    args = parser.parse_args()
    if args.num_scenes < 1 or args.runs < 1 or args.render_workers < 1:
        raise SystemExit("--num-scenes, --runs and --render-workers must be positive")
    out = Path(args.output_dir)
    for cache in ("free_atm_run.json", "unet.ckpt"):  # a fresh start each time, from the caches
        (out / cache).unlink(missing_ok=True)
    first = launch(out, args.num_scenes, args.render_workers)  # makes any missing cache
    times = []
    for _ in range(args.runs):
        times.append(launch(out, args.num_scenes, args.render_workers))
    report = {
        "num_scenes": args.num_scenes,
        "first_run_seconds": round(first[0], 1),
        "startup_seconds": [round(t, 1) for t, _ in times],
        "in_process_seconds": [round(t, 1) for _, t in times],
    }
    print(json.dumps(report))
    print(
        f"startup_seconds={statistics.median(t for t, _ in times):.1f} "
        f"in_process_seconds={statistics.median(t for _, t in times):.1f}"
    )


if __name__ == "__main__":
    main()
