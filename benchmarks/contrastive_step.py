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
from dataclasses import asdict

import torch
from step_timing import device_name, interleaved_times
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

    def step(level: str) -> None:
        model, optimizer = models[level]
        loss = model(**asdict(views(pixels, maps, valid))).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    arms = {level: lambda level=level: step(level) for level in ("instance", "image")}
    times, median = interleaved_times(arms, device, args.repeats)
    result = {
        "device": device_name(device),
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
