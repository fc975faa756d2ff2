"""Training-step time of instance-level against image-level contrastive learning, same batch and backbone.

A step is: two views (kornia), forward of both, NT-Xent, backward, optimizer step. The two levels run
interleaved and repeated in one process on the same batch; medians are compared.

    python benchmarks/contrastive_step.py                 # ResNet-50 at 64 px, batch 32 (CPU-sized)
    python benchmarks/contrastive_step.py --image-size 224 --batch-size 128   # on a GPU

Prints JSON, then ``instance_step_ratio=<x>`` (budget at most 1.15).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict

import torch
from transformers import ResNetConfig

from free_atm.training import InstanceContrastiveConfig, InstanceContrastiveModel, MaskConsistentViews


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    pixels = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device)
    maps = torch.rand(args.batch_size, args.objects, args.image_size // 4, args.image_size // 4, device=device)
    valid = torch.ones(args.batch_size, args.objects, dtype=torch.bool, device=device)
    views = MaskConsistentViews(args.image_size).to(device)
    models = {}
    for level in ("instance", "image"):
        torch.manual_seed(0)
        model = InstanceContrastiveModel(InstanceContrastiveConfig(ResNetConfig(), level=level)).to(device).train()
        models[level] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))

    def step(level: str) -> float:
        model, optimizer = models[level]
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = model(**asdict(views(pixels, maps, valid))).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for level in models:
        step(level)  # warm-up
    times = {level: [] for level in models}
    for repeat in range(args.repeats):
        for level in ("instance", "image") if repeat % 2 == 0 else ("image", "instance"):
            times[level].append(step(level))
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "backbone": "ResNet-50 (ResNetConfig defaults), random init",
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "objects_per_image": args.objects,
        "times_s": times,
        "median_step_s": median,
        "instance_step_ratio": median["instance"] / median["image"],
    }
    print(json.dumps(result, indent=2))
    print(f"instance_step_ratio={result['instance_step_ratio']:.3f}")


if __name__ == "__main__":
    main()
