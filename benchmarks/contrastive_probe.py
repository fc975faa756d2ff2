"""Instance-level against image-level contrastive pretraining on the same data, and a random-init backbone:
object-level kNN and linear-probe accuracy of shape kinds on rendered shapes-world scenes.

Both levels start from the same initial weights (the random-init row) and see the same batches.

    python benchmarks/contrastive_probe.py                          # CPU-sized: small ResNet, 64 px
    python benchmarks/contrastive_probe.py --dataset outputs/demo   # a generated free-atm dataset

Prints JSON, then ``instance_knn=<a> image_knn=<b> random_knn=<c> instance_linear=<d> image_linear=<e>
random_linear=<f>``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch
from transformers import TrainingArguments

from free_atm.training import (
    ContrastiveArguments,
    InstanceContrastiveModel,
    ObjectMapCollator,
    contrastive_trainer,
    probe_backbone,
    shapes_probe_splits,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="shapes:2000", help="dataset folder, Hub id or shapes:N")
    parser.add_argument("--method", default="simclr", choices=["simclr", "moco"])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 1])
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--color-strength", type=float, default=1.0)
    parser.add_argument("--hue", type=float, default=0.5, help="full hue turns: colour cannot solve the task")
    parser.add_argument("--grayscale", type=float, default=0.5)
    parser.add_argument("--levels", nargs="+", default=["instance", "image"], choices=["instance", "image"])
    parser.add_argument("--probe-scenes", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="outputs/contrastive_probe")
    options = parser.parse_args()
    args = ContrastiveArguments(
        dataset_name=options.dataset,
        method=options.method,
        image_size=options.image_size,
        color_strength=options.color_strength,
        hue=options.hue,
        grayscale=options.grayscale,
        backbone_depths=options.depths,
        backbone_widths=options.widths,
        projection_dim=64,
        hidden_dim=256,
        queue_size=1024,
    )
    splits, collator = shapes_probe_splits(options.probe_scenes), ObjectMapCollator(options.image_size)

    def probe(backbone) -> dict:
        return probe_backbone(backbone, splits["train"], splits["test"], collator)

    torch.manual_seed(options.seed)
    results = {"random": probe(InstanceContrastiveModel(args.model_config()).backbone)}
    for level in options.levels:
        training_args = TrainingArguments(
            output_dir=f"{options.output_dir}/{level}",
            max_steps=options.steps,
            per_device_train_batch_size=options.batch_size,
            learning_rate=options.learning_rate,
            warmup_steps=options.steps // 10,
            weight_decay=1e-4,
            logging_steps=max(1, options.steps // 10),
            report_to=[],
            save_strategy="no",
            dataloader_num_workers=0,
            seed=options.seed,
            disable_tqdm=True,
        )
        trainer = contrastive_trainer(replace(args, level=level), training_args)
        start = time.perf_counter()
        trainer.train()
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        results[level] = {
            **probe(trainer.model.backbone),
            "first_loss": losses[0],
            "last_loss": losses[-1],
            "train_seconds": round(time.perf_counter() - start, 1),
        }
    print(json.dumps({"config": vars(options), "results": results}, indent=2))
    print(
        " ".join(
            f"{level}_{kind}={results[level][f'{kind}_accuracy']:.3f}"
            for kind in ("knn", "linear")
            for level in (*options.levels, "random")
        )
    )


if __name__ == "__main__":
    main()
