"""Attention-guided MAE pretraining (Free-ATM section 3.3.2) on a free-atm dataset.

    accelerate launch --cpu --num_processes 1 trainers/train_mae.py \
        --dataset_name outputs/dataset --output_dir outputs/mae --max_steps 2000
    torchrun --nproc_per_node 2 trainers/train_mae.py ...

A ``ViTMAEForPreTraining`` (a new small ViT, ``--config_overrides`` to change it, or
``--model_name_or_path`` to start from a checkpoint) masks 75% of the patches; the share beta of them
chosen by highest attention rises from 0 to ``--guided_ratio_max`` (``--guided_ratio_max 0`` is plain
random MAE). ``--dataset_name`` is a dataset folder, Hub id or ``shapes:N``; ``--real_dataset_name`` with
``--real_ratio`` mixes a second source in. The output holds the whole pretraining model, ``encoder/`` (a
plain ``ViTModel`` that does not mask, with its image processor, for ``AutoModel.from_pretrained``),
``reconstruction.png`` and a model card. A killed run goes on from its last checkpoint when the same
command is run again.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from free_atm.training import ProbeCallback
from free_atm.training.arguments import ScriptArgumentParser
from free_atm.training.cards import write_model_card
from free_atm.training.mae import (
    MAEDataArguments,
    MAEModelArguments,
    MAETrainingArguments,
    guided_noise,
    mae_trainer,
    patch_scores,
    reconstruction_grid,
    vit_encoder,
)
from free_atm.training.run import training_run
from free_atm.training.views import maps_at_image_size
from free_atm.usage import run_reporting_bad_input

RECONSTRUCTION = "reconstruction.png"


def main() -> None:
    parser = ScriptArgumentParser((MAEModelArguments, MAEDataArguments, MAETrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    trainer = mae_trainer(model_args, data_args, training_args)  # checks the data before anything is written
    settings = {**asdict(model_args), **asdict(data_args)}
    with training_run(training_args, settings) as resume:
        out = Path(training_args.output_dir)
        result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()
        metrics = {"train_loss": round(result.training_loss, 4)}
        if trainer.eval_dataset is not None:
            metrics["eval_loss (random masking)"] = round(trainer.evaluate()["eval_loss"], 4)
        if trainer.is_world_process_zero():
            for probe in (c for c in trainer.callback_handler.callbacks if isinstance(c, ProbeCallback)):
                for name, value in probe.history[-1].items():
                    if name != "step":
                        metrics[f"{name} (shapes world)"] = round(value, 4)
            encoder = vit_encoder(trainer.model)
            encoder.save_pretrained(out / "encoder")
            trainer.processing_class.save_pretrained(out / "encoder")
            save_reconstructions(trainer, out / RECONSTRUCTION)
            mae_card(model_args, data_args, training_args, trainer, metrics)
            (out / "mae_results.json").write_text(json.dumps(metrics, indent=2))
        if training_args.push_to_hub:
            trainer.push_to_hub(commit_message="free-atm attention-guided MAE pretraining")
    trainer.end_run()


def save_reconstructions(trainer, path: Path, count: int = 6) -> None:
    """Reconstructions of the first ``count`` training images, masked as at the end of training."""
    rows = [trainer.train_dataset[i] for i in range(min(count, len(trainer.train_dataset)))]
    batch = {k: v.to(trainer.args.device) for k, v in trainer.data_collator(rows).items()}
    maps = maps_at_image_size(batch["pixel_values"], batch["object_maps"])
    config = trainer.model.config
    scores = patch_scores(maps, batch["object_valid"], config.patch_size)
    generator = torch.Generator(trainer.args.device).manual_seed(0)
    noise = guided_noise(scores, config.mask_ratio, trainer.guided_ratio(), generator)
    reconstruction_grid(trainer.model, batch["pixel_values"], noise).save(path)


def mae_card(model_args, data_args, training_args, trainer, metrics: dict) -> None:
    config, final_ratio = trainer.model.config, trainer.guided_ratio()
    guided = model_args.guided_ratio_max > 0
    masking = (
        f"attention-guided: beta {model_args.guided_schedule} up to {model_args.guided_ratio_max} "
        f"(final {final_ratio:.2f})"
        if guided
        else "random (the MAE baseline)"
    )
    write_model_card(
        "mae_model_card.md.j2",
        data_args,
        training_args,
        ["self-supervised", "mae", "vit-mae"],
        "image-feature-extraction",
        masking=masking,
        guided=guided,
        architecture=(
            f"ViT, {config.num_hidden_layers} layers of width {config.hidden_size}, patch "
            f"{config.patch_size}, {config.image_size} px; decoder {config.decoder_num_hidden_layers} "
            f"layers of width {config.decoder_hidden_size}"
        ),
        mask_ratio=model_args.mask_ratio,
        image_size=data_args.image_size,
        learning_rate=training_args.learning_rate,
        metrics=metrics,
        reconstruction=RECONSTRUCTION,
    )


if __name__ == "__main__":
    run_reporting_bad_input(main, "train_mae.py")
