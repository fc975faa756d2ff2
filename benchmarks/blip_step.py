"""Training-step time of BLIP pretraining with position prompts against without, same model and batch.

A step is what ``PositionPromptTrainer`` does: one mask-consistent view (kornia), the blocks of the
view's object maps (one host synchronisation), the captions with their prompts, tokenisation, ITC + ITM
+ LM forward, backward, optimizer step. The plain arm skips the blocks and the prompts. Both arms share
the model, optimizer and batch (real shapes-world scenes with their maps) and run interleaved in one
process; medians are compared. The prompts lengthen every text the four text passes read (ITC, ITM on
the true pair and two hard negatives, LM): that is the method, not overhead, so a third arm trains on plain
captions of the same token length (the prompted captions of one view, fixed) and skips the blocks and the
prompt building; the budget is against that arm.

    python benchmarks/blip_step.py                        # the default new BLIP (4 x 192) at 64 px, batch 64
    python benchmarks/blip_step.py --prompts one          # PTP's one prompt per caption

Prints JSON, then ``equal_length_step_ratio=<x>`` (budget at most 1.10), ``prompt_step_ratio=<y>`` (against
the shorter plain captions) and the mean caption tokens of each arm.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch
from step_timing import device_name, interleaved_times
from transformers import TrainingArguments

from free_atm.training.blip.recipe import BlipDataArguments, BlipModelArguments, blip_trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", default="all", help="the prompted arm's mode: all (the paper) or one")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden-size", type=int, default=192)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--num-heads", type=int, default=3)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if args.prompts not in ("all", "one"):
        raise SystemExit(f"--prompts must be all or one, got {args.prompts!r}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model_args = BlipModelArguments(
        hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=args.num_heads, patch_size=args.patch_size
    )
    data_args = BlipDataArguments(dataset_name=f"shapes:{4 * args.batch_size}", image_size=args.image_size)
    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(output_dir=out, use_cpu=device.type == "cpu", report_to=[], seed=0)
        trainer = blip_trainer(model_args, data_args, training_args)
    model = trainer.model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = trainer.train_dataset.select(range(args.batch_size))
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in trainer.data_collator(list(rows)).items()}
    trainer.prompts = args.prompts
    view = trainer.views.single(batch["pixel_values"], batch["object_maps"], batch["object_valid"])
    same_length = {**batch, "captions": trainer.captions(view, batch)}  # plain text as long as the prompted
    tokens = {"prompts": [], "plain": [], "equal_length": []}

    def step(arm: str, mode: str, inputs: dict) -> None:
        trainer.prompts = mode
        loss = trainer.compute_loss(model, inputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        tokens[arm].append(float(trainer._sums["caption_tokens"]) / trainer._count)
        trainer._sums, trainer._count = {}, 0

    arms = {
        "prompts": lambda: step("prompts", args.prompts, batch),
        "plain": lambda: step("plain", "none", batch),
        "equal_length": lambda: step("equal_length", "none", same_length),
    }
    times, median = interleaved_times(arms, device, args.repeats)
    config = model.config
    result = {
        "device": device_name(device),
        "model": (
            f"BLIP, vision {config.vision_config.num_hidden_layers} x {config.vision_config.hidden_size} "
            f"patch {config.vision_config.patch_size}, text {config.text_config.num_hidden_layers} x "
            f"{config.text_config.hidden_size}, random init"
        ),
        "image_tokens": (args.image_size // args.patch_size) ** 2 + 1,
        "batch_size": args.batch_size,
        "prompts": args.prompts,
        "median_step_s": median,
        "mean_caption_tokens": {arm: sum(v) / len(v) for arm, v in tokens.items()},
        "times_s": times,
        "equal_length_step_ratio": median["prompts"] / median["equal_length"],
        "prompt_step_ratio": median["prompts"] / median["plain"],
    }
    print(json.dumps(result, indent=2))
    lengths = result["mean_caption_tokens"]
    print(
        f"equal_length_step_ratio={result['equal_length_step_ratio']:.3f} "
        f"prompt_step_ratio={result['prompt_step_ratio']:.3f} prompts_tokens={lengths['prompts']:.1f} "
        f"equal_length_tokens={lengths['equal_length']:.1f} plain_tokens={lengths['plain']:.1f}"
    )


if __name__ == "__main__":
    main()
