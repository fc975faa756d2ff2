"""Which block and noise level of a diffusion U-Net carry the most (the second seed's figure 4, in miniature).

On the task of ``free-atm probe --pooling mean`` (the shape kind of one-object rendered scenes, half to
fit and half to test, chance 0.2): a linear probe (features average-pooled to 2 x 2, diffssl's) per
block and per noise level t of the shipped shapes model; then DifFormer on the best blocks at the best
noise levels and DifFeed at the best block and level (both as DifFormers of width 128 pooling to 8 x 8 by
default: diffssl's 16 x 16 and width 1024 take hours on a CPU); against the same linear probe on a random-init
U-Net of the same architecture (same VAE), and the mean-pooled linear probe of any ``--backbones`` (the
contrastive or MAE backbones ``free-atm probe`` reads) and of a random-init contrastive ResNet.

    python benchmarks/diffusion_features.py                       # the CPU-sized run
    python benchmarks/diffusion_features.py --backbones outputs/simclr-instance/backbone

Writes ``--out`` (the table as JSON and the plot, accuracy against t with one line per block, as PNG) and
prints JSON, then ``best_block=<b> best_t=<t> linear=<a> difformer=<c> diffeed=<d> random_unet_linear=<e>``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModel, TrainingArguments

from free_atm.features import DiffusionFeatureExtractor
from free_atm.features.recipe import DiffusionHeadArguments, LabelledDataArguments, cache_features, head_trainer
from free_atm.training import ObjectMapCollator, probe_backbone, shapes_probe_splits


def train_and_score(head, train, test, epochs: int, learning_rate: float, batch_size: int = 64) -> float:
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, num_train_epochs=epochs, per_device_train_batch_size=batch_size,
            learning_rate=learning_rate, weight_decay=0.01, report_to=[], save_strategy="no",
            logging_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0,
        )  # fmt: skip
        trainer = head_trainer(head, train, test, args, head.config.image_size)
        trainer.train()
        return trainer.evaluate()["eval_accuracy"]


def sweep(extractor, arguments, train, test, names, epochs, learning_rate) -> dict[str, dict[int, float]]:
    """Linear-probe accuracy per block and t, from one pass per t over the data (features pooled 2 x 2)."""
    keys = [(t, block) for t in extractor.timesteps for block in extractor.blocks]
    cached = [cache_features(extractor, d, keys, pool=2) for d in (train, test)]
    table: dict[str, dict[int, float]] = {}
    for index, (t, block) in enumerate(keys):
        arguments.blocks, arguments.timesteps = [block], [t]
        head = arguments.head_model(extractor, names)
        one = [type(c)([c.features[index]], c.labels) for c in cached]
        table.setdefault(block, {})[t] = train_and_score(head, *one, epochs, learning_rate)
    return table


def plot(table: dict[str, dict[int, float]], path: Path, title: str) -> None:
    """Accuracy against the noise level t (on its own scale), one line per block (the ten best), as PNG,
    drawn with matplotlib (``pip install 'free-atm[plots]'``)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    steps = sorted({t for row in table.values() for t in row})
    best = sorted(table, key=lambda b: -max(table[b].values()))[:10]
    figure, axes = pyplot.subplots(figsize=(9, 5.6), layout="constrained")
    for block in best:
        axes.plot(steps, [table[block][t] for t in steps], marker="o", label=block)
    axes.axhline(0.2, color="#aaaaaa", linestyle="--", label="chance (5 kinds)")
    axes.set(xlabel="noise level t (scheduler timestep, 0 = clean image)", ylabel="linear-probe accuracy", title=title)
    axes.set_xticks(steps)
    axes.set_ylim(0.0, max(0.5, max(max(row.values()) for row in table.values()) + 0.05))
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", default="shapes")
    parser.add_argument("--scenes", type=int, default=1000, help="one-object scenes, half fit and half test")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[0, 25, 50, 100, 200, 400, 700])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--top-blocks", type=int, default=3, help="DifFormer fuses this many best blocks")
    parser.add_argument("--top-timesteps", type=int, default=2, help="... at this many best noise levels")
    parser.add_argument("--fusion-pool", type=int, default=8, help="DifFormer's pool (diffssl: 16; 8 fits a CPU)")
    parser.add_argument("--fusion-epochs", type=int, default=10)
    parser.add_argument("--diffeed-epochs", type=int, default=5)
    parser.add_argument("--backbones", nargs="*", default=[], help="backbone folders to probe the same way")
    parser.add_argument("--out", default="outputs/diffusion_features")
    options = parser.parse_args()
    start = time.perf_counter()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test, names = LabelledDataArguments(dataset_name=f"shapes:{options.scenes}").splits()
    arguments = DiffusionHeadArguments(unet=options.unet, timesteps=options.timesteps)
    probe = arguments.extractor()
    everything = DiffusionFeatureExtractor(
        probe.unet, probe.scheduler, [b.name for b in probe.all_blocks], options.timesteps, probe.vae,
        probe.conditioning, sample_size=probe.image_size,
    )  # fmt: skip
    table = sweep(everything, arguments, train, test, names, options.epochs, options.learning_rate)
    ranked = sorted(((acc, block, t) for block, row in table.items() for t, acc in row.items()), reverse=True)
    linear, best_block, best_t = ranked[0]
    blocks = sorted(table, key=lambda b: -max(table[b].values()))[: options.top_blocks]
    levels = sorted(options.timesteps, key=lambda t: -max(row[t] for row in table.values()))[: options.top_timesteps]
    plot(table, out / "accuracy_by_block_and_t.png", f"linear probe on {options.unet}: accuracy against t")
    (out / "linear_by_block_and_t.json").write_text(json.dumps(table, indent=2))
    print(f"linear sweep done in {time.perf_counter() - start:.0f} s: best {best_block} at t={best_t}", flush=True)

    fusion = dict(hidden_size=128, num_heads=4, pool_size=options.fusion_pool)
    fused = DiffusionHeadArguments(unet=options.unet, head="difformer", blocks=blocks, timesteps=levels, **fusion)
    extractor = fused.extractor()
    head = fused.head_model(extractor, names)
    cached = [cache_features(extractor, d, head.config.feature_keys()) for d in (train, test)]
    difformer = train_and_score(head, *cached, options.fusion_epochs, 1e-3)
    print(f"DifFormer done in {time.perf_counter() - start:.0f} s: {difformer:.3f}", flush=True)

    feedback = DiffusionHeadArguments(
        unet=options.unet, head="diffeed", blocks=[best_block], timesteps=[best_t], **fusion
    )
    head = feedback.head_model(feedback.extractor(), names)
    diffeed = train_and_score(head, train, test, options.diffeed_epochs, 1e-3, batch_size=32)

    # the same linear probe on a random-init U-Net of the same architecture (the trained VAE kept)
    torch.manual_seed(0)
    random_unet = type(probe.unet).from_config(probe.unet.config).eval()
    random_extractor = DiffusionFeatureExtractor(
        random_unet, probe.scheduler, [best_block], [best_t], probe.vae, probe.conditioning,
        sample_size=probe.image_size,
    )  # fmt: skip
    arguments.blocks, arguments.timesteps = [best_block], [best_t]
    head = arguments.head_model(random_extractor, names)
    cached = [cache_features(random_extractor, d, head.config.feature_keys(), pool=2) for d in (train, test)]
    random_unet_linear = train_and_score(head, *cached, options.epochs, options.learning_rate)

    # backbones through free-atm probe's own mean-pooled probes, on the same scenes
    splits = shapes_probe_splits(options.scenes, max_objects=1)
    collator = ObjectMapCollator(probe.image_size)
    backbones = {}
    for path in options.backbones:
        backbones[path] = probe_backbone(AutoModel.from_pretrained(path), splits["train"], splits["test"], collator,
                                         pooling="mean")  # fmt: skip
    from free_atm.training.contrastive.model import InstanceContrastiveConfig, InstanceContrastiveModel

    torch.manual_seed(0)
    resnet = InstanceContrastiveModel(InstanceContrastiveConfig()).backbone
    backbones["random-init contrastive ResNet"] = probe_backbone(
        resnet, splits["train"], splits["test"], collator, pooling="mean"
    )
    result = {
        "unet": options.unet,
        "test_images": len(test),
        "linear_by_block_and_t": table,
        "best_block": best_block,
        "best_t": best_t,
        "linear": linear,
        "difformer": {"blocks": blocks, "timesteps": levels, "accuracy": difformer},
        "diffeed": {"block": best_block, "t": best_t, "accuracy": diffeed},
        "random_unet_linear": random_unet_linear,
        "backbones_mean_pooled": backbones,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(
        f"best_block={best_block} best_t={best_t} linear={linear:.3f} difformer={difformer:.3f} "
        f"diffeed={diffeed:.3f} random_unet_linear={random_unet_linear:.3f}"
    )


if __name__ == "__main__":
    main()
