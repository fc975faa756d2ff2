"""Attention-guided against random-masking MAE on the same data at equal steps, and the untrained ViT:
kNN and linear-probe accuracy of shape kinds on rendered shapes-world scenes, object level (patch
features pooled per object map) and image level (CLS token, mean of the patches) on one-object scenes.

Both arms start from the same initial weights (the init row) and see the same batches and views; they
differ only in beta's ceiling (``--guided-ratio-max``, 0 for random MAE).

    python benchmarks/mae_probe.py                          # CPU-sized: a small ViT at 64 px
    python benchmarks/mae_probe.py --dataset outputs/demo   # a generated free-atm dataset

Prints JSON, then ``guided_knn=<a> random_knn=<b> init_knn=<c> guided_linear=<d> random_linear=<e>
init_linear=<f>`` (object level).
"""

from __future__ import annotations

import argparse
import json
import time

from free_atm.training import ObjectMapCollator, probe_backbone, shapes_probe_splits
from free_atm.training.mae import (
    MAEDataArguments,
    MAEModelArguments,
    MAETrainingArguments,
    mae_trainer,
    vit_encoder,
)

SMALL_VIT = (
    "hidden_size=128,num_hidden_layers=4,num_attention_heads=4,intermediate_size=512,"
    "decoder_hidden_size=64,decoder_num_hidden_layers=2,decoder_num_attention_heads=4,decoder_intermediate_size=256"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="shapes:4000", help="dataset folder, Hub id or shapes:N")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--base-learning-rate", type=float, default=6e-3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--config-overrides", default=SMALL_VIT)
    parser.add_argument("--guided-ratio-max", type=float, default=0.8)
    parser.add_argument("--norm-pix-loss", type=int, default=1, choices=[0, 1])
    parser.add_argument("--probe-scenes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="outputs/mae_probe")
    options = parser.parse_args()
    collator = ObjectMapCollator(options.image_size)
    splits = {
        "": shapes_probe_splits(options.probe_scenes),
        "single": shapes_probe_splits(options.probe_scenes, max_objects=1),
    }

    def probe(encoder) -> dict:
        result = probe_backbone(encoder, splits[""]["train"], splits[""]["test"], collator)
        for pooling in ("cls", "mean"):
            image = probe_backbone(
                encoder, splits["single"]["train"], splits["single"]["test"], collator, pooling=pooling
            )
            result.update({f"{pooling}_{name}": value for name, value in image.items()})
        return result

    results = {}
    for arm, ratio in (("guided", options.guided_ratio_max), ("random", 0.0)):
        model_args = MAEModelArguments(
            config_overrides=options.config_overrides,
            guided_ratio_max=ratio,
            norm_pix_loss=bool(options.norm_pix_loss),
        )
        data_args = MAEDataArguments(dataset_name=options.dataset, image_size=options.image_size)
        training_args = MAETrainingArguments(
            output_dir=f"{options.output_dir}/{arm}",
            max_steps=options.steps,
            per_device_train_batch_size=options.batch_size,
            base_learning_rate=options.base_learning_rate,
            adam_beta2=0.95,
            weight_decay=0.05,
            warmup_steps=options.steps // 10,
            logging_steps=max(1, options.steps // 10),
            report_to=[],
            save_strategy="no",
            dataloader_num_workers=0,
            seed=options.seed,
            disable_tqdm=True,
        )
        trainer = mae_trainer(model_args, data_args, training_args)
        if not results:
            results["init"] = probe(vit_encoder(trainer.model))  # both arms start from these weights
        start = time.perf_counter()
        trainer.train()
        logs = [log for log in trainer.state.log_history if "loss" in log]
        results[arm] = {
            **probe(vit_encoder(trainer.model)),
            "first_loss": logs[0]["loss"],
            "last_loss": logs[-1]["loss"],
            "last_masked_in_objects": logs[-1]["masked_in_objects"],
            "object_area": logs[-1]["object_area"],
            "train_seconds": round(time.perf_counter() - start, 1),
        }
    print(json.dumps({"config": vars(options), "results": results}, indent=2))
    print(
        " ".join(
            f"{arm}_{kind}={results[arm][f'{kind}_accuracy']:.3f}"
            for kind in ("knn", "linear")
            for arm in ("guided", "random", "init")
        )
    )


if __name__ == "__main__":
    main()
