"""The training probe's breakdown of a shapes-world generator: what it draws of 192 one-object and 192
multi-object held-out captions (:mod:`free_atm.evaluation.probe`), judged per kind and per object size.

    python benchmarks/shapes_probe.py [--model shapes] [--per-group 192] [--steps 20] [--guidance-scale 5]

The recipe arms of the shapes model's long training and its sampling settings are compared with it.
Prints JSON, then ``prompt_fidelity=... one_object_fidelity=... kind_given_colour_one_object=...
colour_present=... binding=... seconds=...``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from free_atm.evaluation.judge import shape_classifier
from free_atm.evaluation.probe import probe_breakdown, probe_scenes
from free_atm.models import load_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes", help="a shapes-world pipeline: name or folder")
    parser.add_argument("--per-group", type=int, default=192, help="one-object captions, and as many of 2 or 3")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.per_group < 1 or args.steps < 1:
        parser.error(f"--per-group and --steps must be positive, got {args.per_group} and {args.steps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    pipe = load_pipeline(args.model)
    breakdown = probe_breakdown(
        pipe,
        probe_scenes(args.per_group),
        shape_classifier(),
        steps=args.steps,
        guidance_scale=args.guidance_scale,
    )
    seconds = time.time() - started
    print(json.dumps({"model": args.model, **vars(args), **breakdown, "seconds": round(seconds, 1)}, indent=2))
    keys = ("prompt_fidelity", "one_object_fidelity", "kind_given_colour_one_object", "colour_present", "binding")
    print(" ".join(f"{key}={breakdown[key]:.3f}" for key in keys) + f" seconds={seconds:.0f}")


if __name__ == "__main__":
    main()
