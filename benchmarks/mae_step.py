"""Training-step time of attention-guided against random masking, same ViTMAE, batch and view.

A guided step is what ``GuidedMAETrainer`` does: one mask-consistent view (kornia), the patch scores of
the object maps, the guided noise (beta 0.8), forward, backward, optimizer step. A random step is plain
MAE: the same view, ViTMAE drawing its own noise. Both arms share the model and optimizer and run
interleaved in one process; medians are compared.

    python benchmarks/mae_step.py                                   # the default ViT at 64 px, batch 64
    python benchmarks/mae_step.py --image-size 224 --patch-size 16 --batch-size 256 \
        --config-overrides hidden_size=768,num_hidden_layers=12,num_attention_heads=12,intermediate_size=3072

Prints JSON, then ``guided_step_ratio=<x>`` (budget at most 1.02).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from step_timing import device_name, interleaved_times, timed
from transformers import ViTMAEForPreTraining

from free_atm.training import MaskConsistentViews
from free_atm.training.mae import MAEModelArguments, guided_noise, patch_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--config-overrides", default=None)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model_args = MAEModelArguments(patch_size=args.patch_size, config_overrides=args.config_overrides)
    model = ViTMAEForPreTraining(model_args.model_config(args.image_size)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    views = MaskConsistentViews(args.image_size, scale=(0.2, 1.0), color_strength=0.0, grayscale=0.0, blur=0.0)
    pixels = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device)
    maps = torch.rand(args.batch_size, args.objects, args.image_size // 8, args.image_size // 8, device=device)
    valid = torch.ones(args.batch_size, args.objects, dtype=torch.bool, device=device)
    config = model.config

    def step(guided: bool) -> None:
        view = views.single(pixels, maps, valid)
        noise = None
        if guided:
            scores = patch_scores(view.object_maps, view.object_valid, config.patch_size)
            noise = guided_noise(scores, config.mask_ratio, 0.8)
        loss = model(pixel_values=view.pixel_values, noise=noise).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def masking() -> None:
        """The guided arm's extra work alone: patch scores and noise."""
        guided_noise(patch_scores(maps, valid, config.patch_size), config.mask_ratio, 0.8)

    times, median = interleaved_times(
        {"guided": lambda: step(True), "random": lambda: step(False)}, device, args.repeats
    )
    result = {
        "device": device_name(device),
        "model": f"ViTMAE {config.num_hidden_layers} x {config.hidden_size}, patch {config.patch_size}, random init",
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "objects_per_image": args.objects,
        "median_step_s": median,
        "median_masking_s": statistics.median(timed(masking, device) for _ in range(args.repeats)),
        "times_s": times,
        "guided_step_ratio": median["guided"] / median["random"],
    }
    print(json.dumps(result, indent=2))
    print(f"guided_step_ratio={result['guided_step_ratio']:.3f}")


if __name__ == "__main__":
    main()
