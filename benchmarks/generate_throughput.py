"""Images per second of ``free-atm generate`` against the bare pipeline loop with no writing, in one run.

Both draw the same prompts and initial noise in the same batches on the same pipeline object; the
generate run also encodes, writes and checks the shards, writes the card and the sample grid. Runs are
interleaved and repeated; the medians are compared.

    python benchmarks/generate_throughput.py                      # the shipped shapes model
    python benchmarks/generate_throughput.py --model tiny-random --num-images 32

Prints JSON, then ``writer_overhead=<x>`` (the generate run's extra wall time over the bare loop's;
budget at most 0.05).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict

import torch

from free_atm.data.shards import ShardPlan
from free_atm.generation.generate import GenerationConfig, PromptSource, generate_dataset, shard_batches
from free_atm.models import load_pipeline


def bare_loop(pipe, config: GenerationConfig) -> None:
    """The pipeline calls of ``generate`` and nothing else (same shards, same batches)."""
    plan, prompts = ShardPlan(config.num_images, config.shard_size), PromptSource(config)
    for shard in range(plan.num_shards):
        for _ in shard_batches(pipe, config, prompts, plan.indices(shard)):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--num-images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = load_pipeline(args.model, device)
    times: dict[str, list[float]] = {"bare": [], "generate": []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats + 1):  # the first round warms up
            config = GenerationConfig(
                model=args.model,
                num_images=args.num_images,
                out=os.path.join(scratch, f"run{repeat}"),
                batch_size=args.batch_size,
                shard_size=args.shard_size,
                steps=args.steps,
            )
            for variant in ("bare", "generate") if repeat % 2 == 0 else ("generate", "bare"):
                start = time.perf_counter()
                generate_dataset(config, pipe=pipe) if variant == "generate" else bare_loop(pipe, config)
                if repeat:
                    times[variant].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "config": {k: v for k, v in asdict(config).items() if k not in ("out", "push_to_hub", "prompts")},
        "times_s": times,
        "images_per_second": {k: args.num_images / v for k, v in median.items()},
        "writer_overhead": median["generate"] / median["bare"] - 1,
    }
    print(json.dumps(result, indent=2))
    print(f"writer_overhead={result['writer_overhead']:.3f}")


if __name__ == "__main__":
    main()
