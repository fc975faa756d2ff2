"""Train a grounding adapter for a diffusers generator on masked images, and save it where a stock
pipeline loads it (``pipe.load_lora_weights(OUTPUT_DIR)``).

    accelerate launch trainers/train_grounding_lora.py --pretrained_model_name_or_path shapes \\
        --dataset_name shapes:2000 --output_dir outputs/grounding-lora --max_steps 500

The base model is any SD 1.x/2.x, SDXL, SD3 or Flux pipeline (a folder or Hub id, or ``shapes``); the data
any free-atm dataset (generated or annotated) or ``shapes:N`` rendered scenes with exact masks. A killed run
resumes from its last checkpoint when the same command is run again.
"""

from __future__ import annotations

from dataclasses import asdict

from free_atm.training.arguments import FreeATMTrainingArguments, ScriptArgumentParser
from free_atm.training.cards import write_model_card
from free_atm.training.grounding import attention_layers
from free_atm.training.grounding.recipe import GroundingArguments, grounding_trainer
from free_atm.training.run import training_run
from free_atm.usage import run_reporting_bad_input


def main() -> None:
    parser = ScriptArgumentParser((GroundingArguments, FreeATMTrainingArguments))
    args, training_args = parser.parse_args_into_dataclasses()
    trainer = grounding_trainer(args, training_args)  # checks the data, then loads the base model
    with training_run(training_args, asdict(args)) as resume:
        before = trainer.held_out_miou() if trainer.is_world_process_zero() else None  # the base model's
        result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()
        if trainer.is_world_process_zero():
            last = next((log for log in reversed(trainer.state.log_history) if "grounding" in log), {})
            metrics = {
                "train_loss": round(result.training_loss, 4),
                **{k: last[k] for k in ("denoising", "grounding", "pixel") if k in last},
            }
            if before is not None:
                after = trainer.held_out_miou()
                metrics |= {
                    f"held-out annotate mean IoU ({args.validation_images} images), base model": round(before, 4),
                    f"held-out annotate mean IoU ({args.validation_images} images), with the adapter": round(after, 4),
                }
            grounding_card(args, training_args, trainer, metrics)
        if training_args.push_to_hub:
            trainer.push_to_hub(commit_message="free-atm grounding adapter")
    trainer.end_run()


def grounding_card(args: GroundingArguments, training_args, trainer, metrics: dict) -> None:
    layers = attention_layers(trainer.model.pipe.denoiser)
    chosen = "all" if args.blocks is None else ", ".join(str(b) for b in args.blocks)
    base = args.pretrained_model_name_or_path
    write_model_card(
        "grounding_lora_model_card.md.j2",
        args,
        training_args,
        ["lora", "grounding", "text-to-image", "diffusers"],
        "text-to-image",
        library_name="diffusers",
        base_model=base if "/" in base and not base.startswith((".", "/", "~")) else None,
        base=base,
        base_model_link=f"https://huggingface.co/{base}" if "/" in base else "https://github.com/free-atm/free-atm",
        rank=args.rank,
        alpha=args.rank if args.alpha is None else args.alpha,
        denoising_weight=args.denoising_weight,
        grounding_weight=args.grounding_weight,
        pixel_weight=args.pixel_weight,
        layers=f"{chosen} of {len(layers)} ({type(trainer.model.pipe.denoiser).__name__})",
        timesteps=f"{args.min_timestep}-{args.max_timestep}",
        metrics=metrics,
    )


if __name__ == "__main__":
    run_reporting_bad_input(main, "train_grounding_lora.py")
