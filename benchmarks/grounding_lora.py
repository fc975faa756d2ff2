"""Grounding adapters on the shapes world: held-out masks and prompt fidelity of a generator before and
after a LoRA trained with the grounding loss on rendered scenes with exact masks.

Two generators: the shipped UNet model (``shapes``) and the small SD3 of ``concept_attention_quality.py``
(the transformer that benchmark trains into its ``--work-dir``: ``--sd3-transformer``). For each, before and after
its adapter: the held-out split of ``mask_quality.py`` drawn from the same noise, its raw maps cut by each
threshold against the regions of the named colours in the drawn pixels (mean IoU) and judged for prompt
fidelity; and ``annotate`` on the real split's rendered scenes against their exact masks (mean IoU), at
the family's default noise level. The adapter is ``trainers/train_grounding_lora.py``'s recipe, trained for
``--train-steps`` on ``shapes:N`` rendered scenes into ``--work-dir`` (a finished adapter is reused; a killed
run resumes).

    python benchmarks/grounding_lora.py --sd3-transformer outputs/shapes_sd3/transformer_2500

Prints JSON, then ``<model>_generated_miou=<before>-><after> <model>_annotate_miou=.. <model>_fidelity=..``
for each model, with the training minutes and the adapter's share of the denoiser's parameters.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from PIL import Image

from free_atm.evaluation.fidelity import (
    HELD_OUT_SEED,
    REAL_SEED,
    colour_truths,
    cut_masks,
    draw_scenes,
    fidelity_breakdown,
    masks_miou,
    scenes_split,
)
from free_atm.evaluation.judge import shape_classifier
from free_atm.models import load_lora, load_pipeline
from free_atm.run_settings import last_complete_checkpoint
from free_atm.training.arguments import FreeATMTrainingArguments
from free_atm.training.grounding.adapter import ADAPTER_FILE
from free_atm.training.grounding.recipe import GroundingArguments, grounding_trainer

THRESHOLDS = {"fixed 0.4": ("fixed", 0.4), "otsu": ("otsu", 0.4), "competition 0.4": ("competition", 0.4)}
#: the small SD3 reads its 24 CLIP positions only (no T5), as it was trained
SD3_CALL = {"max_sequence_length": 0}


def best_miou(maps: list, truths: list) -> tuple[float, str]:
    """The best mean IoU over :data:`THRESHOLDS` of the masks cut from ``maps``, and its threshold."""
    table = {name: masks_miou(cut_masks(maps, truths, *spec), truths) for name, spec in THRESHOLDS.items()}
    name = max(table, key=table.get)
    return table[name], name


def measure(pipe, held_out, real, call: dict, steps: int, guidance: float) -> dict:
    """Held-out generated-image mean IoU and prompt fidelity, and ``annotate`` mean IoU on rendered scenes."""
    images, captured = draw_scenes(pipe, held_out, {"raw": {}}, steps, guidance, **call)
    truths = colour_truths(images, held_out)
    generated, generated_cut = best_miou([m for m, *_ in captured["raw"]], truths)
    fidelity = fidelity_breakdown(images, held_out, shape_classifier())["prompt_fidelity"]
    maps = []
    for start in range(0, len(real), 16):
        part = real[start : start + 16]
        out = pipe.annotate(
            [Image.fromarray(s.image) for s in part], [s.caption for s in part], [s.objects for s in part],
            generator=[torch.Generator().manual_seed(s.seed) for s in part], **call,
        )  # fmt: skip
        maps += out.attention_maps
    annotated, annotated_cut = best_miou(maps, [s.masks for s in real])
    return {
        "generated_miou": round(generated, 4),
        "generated_threshold": generated_cut,
        "prompt_fidelity": round(fidelity, 4),
        "prompt_fidelity_standard_error": round(math.sqrt(fidelity * (1 - fidelity) / len(held_out)), 4),
        "annotate_miou": round(annotated, 4),
        "annotate_threshold": annotated_cut,
    }


def train_adapter(pipe, model: str, out: Path, args, call: dict) -> float:
    """Train (or resume, or reuse) the adapter of ``pipe`` (named ``model`` in its card) in ``out``; the
    seconds it took here."""
    if (out / ADAPTER_FILE).is_file():
        return 0.0
    started = time.time()
    grounding = GroundingArguments(
        dataset_name=f"shapes:{args.train_scenes}",
        image_size=64,
        pretrained_model_name_or_path=model,
        rank=args.rank,
        max_sequence_length=call.get("max_sequence_length"),
        grounding_weight=args.grounding_weight,
        pixel_weight=args.pixel_weight,
        max_timestep=args.max_timestep,
    )
    training = FreeATMTrainingArguments(
        output_dir=str(out), max_steps=args.train_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, use_cpu=True, report_to="none", save_strategy="steps",
        save_steps=max(1, args.train_steps // 4), logging_steps=max(1, args.train_steps // 20), seed=0,
        disable_tqdm=True,
    )  # fmt: skip
    trainer = grounding_trainer(grounding, training, pipe)
    trainer.train(resume_from_checkpoint=last_complete_checkpoint(out))
    trainer.save_model()
    return time.time() - started


def base_pipeline(name: str, transformer: Path):
    """A fresh copy of the generator ``name``: the shipped model, or the small SD3 (the shipped model's VAE
    and word codes, the transformer ``concept_attention_quality.py`` trained)."""
    if name == "shapes":
        pipe = load_pipeline("shapes")
    else:
        from diffusers import SD3Transformer2DModel

        from free_atm.models.shapes.mmdit import shapes_sd3_pipeline

        pipe = shapes_sd3_pipeline(SD3Transformer2DModel.from_pretrained(transformer))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["shapes", "sd3"], choices=["shapes", "sd3"])
    parser.add_argument("--sd3-transformer", type=Path, default=Path("outputs/shapes_sd3/transformer_2500"))
    parser.add_argument("--work-dir", type=Path, default=Path("outputs/grounding_lora"))
    parser.add_argument("--num-images", type=int, default=384, help="per split")
    parser.add_argument("--train-scenes", type=int, default=4000)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--grounding-weight", type=float, default=1.0, help="the token grounding loss's weight")
    parser.add_argument("--pixel-weight", type=float, default=1.0, help="the pixel grounding loss's weight")
    parser.add_argument("--max-timestep", type=int, default=1000, help="highest noise level trained on")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    args = parser.parse_args()
    for name in ("num_images", "train_scenes", "train_steps", "batch_size", "rank", "steps"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if "sd3" in args.models and not (args.sd3_transformer / "config.json").is_file():
        parser.error(
            f"--sd3-transformer {args.sd3_transformer} holds no transformer: run concept_attention_quality.py"
        )
    models = {"shapes": ("shapes", {}), "sd3": ("the shapes SD3 of concept_attention_quality.py", SD3_CALL)}
    held_out, real = scenes_split(HELD_OUT_SEED, args.num_images), scenes_split(REAL_SEED, args.num_images)
    results, summary = {}, []
    for name in args.models:
        model, call = models[name]
        base = base_pipeline(name, args.sd3_transformer)
        before = measure(base, held_out, real, call, args.steps, args.guidance_scale)
        total = sum(p.numel() for p in base.denoiser.parameters())
        seconds = train_adapter(base_pipeline(name, args.sd3_transformer), model, args.work_dir / name, args, call)
        adapted = base_pipeline(name, args.sd3_transformer)
        load_lora(adapted, str(args.work_dir / name))
        trainable = sum(p.numel() for n, p in adapted.denoiser.named_parameters() if "lora_" in n)
        after = measure(adapted, held_out, real, call, args.steps, args.guidance_scale)
        results[name] = {"model": model, "before": before, "after": after, "training_seconds": round(seconds, 1),
                         "adapter_share": round(trainable / (total or 1), 4)}  # fmt: skip
        summary.append(
            " ".join(
                f"{name}_{key}={before[key]:.3f}->{after[key]:.3f}"
                for key in ("generated_miou", "annotate_miou", "prompt_fidelity")
            )
            + f" {name}_train_minutes={seconds / 60:.1f} {name}_adapter_share={trainable / (total or 1):.3f}"
        )
    print(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))
    print(" ".join(summary))


if __name__ == "__main__":
    main()
