"""A classifier on the frozen features of a diffusion U-Net (the second seed): linear probe, DifFormer or
DifFeed.

    python trainers/train_diffusion_probe.py --output_dir outputs/probe --blocks up_blocks.1.resnets.0 \
        --timesteps 100 --num_train_epochs 30
    python trainers/train_diffusion_probe.py --output_dir x --list_blocks        # what can be read
    accelerate launch trainers/train_diffusion_probe.py --unet stabilityai/stable-diffusion-2-1-base \
        --dataset_name my/labelled-images --head difformer --blocks up_blocks.1.attentions.0 ...

``--unet``: a diffusers pipeline folder or Hub id (Stable Diffusion 1.x/2.x and SDXL read with the empty
prompt, unconditional DDPM/LDM pipelines as they are), or ``shapes``, the shipped model (default).
``--dataset_name``: ``shapes:N`` (one-object rendered scenes labelled by shape kind, the task of ``free-atm
probe --pooling mean``) or a folder or Hub id with an image and a label column. Linear and DifFormer heads
train on features extracted once (the U-Net is frozen and the noise seeded); DifFeed runs the U-Net twice
per step. The output holds the head (``from_pretrained`` it, then ``attach`` an extractor of its
``config.unet``), ``eval_results.json`` and a model card.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from free_atm.features.recipe import (
    DiffusionHeadArguments,
    LabelledDataArguments,
    cache_features,
    head_trainer,
)
from free_atm.training.arguments import FreeATMTrainingArguments, ScriptArgumentParser
from free_atm.training.cards import write_model_card
from free_atm.training.run import training_run
from free_atm.usage import run_reporting_bad_input


def main() -> None:
    parser = ScriptArgumentParser((DiffusionHeadArguments, LabelledDataArguments, FreeATMTrainingArguments))
    head_args, data_args, training_args = parser.parse_args_into_dataclasses()
    extractor = head_args.extractor(data_args.image_size, training_args.device)
    if head_args.list_blocks:
        print("\n".join(str(block) for block in extractor.all_blocks))
        return
    train, evaluation, labels = data_args.splits()
    head = head_args.head_model(extractor, labels, training_args.seed)
    settings = {**asdict(head_args), **asdict(data_args)}
    with training_run(training_args, settings) as resume:
        if head_args.head != "diffeed":  # features once: the U-Net is frozen and its noise seeded
            pool = head.config.pool_size if head_args.head == "linear" else None
            keys, batch = head.config.feature_keys(), data_args.extraction_batch_size
            train, evaluation = (cache_features(extractor, d, keys, batch, pool) for d in (train, evaluation))
        trainer = head_trainer(head, train, evaluation, training_args, extractor.image_size)
        trainer.train(resume_from_checkpoint=resume)
        metrics = trainer.evaluate()
        trainer.save_model()
        if trainer.is_world_process_zero():
            Path(training_args.output_dir, "eval_results.json").write_text(json.dumps(metrics, indent=2))
            write_model_card(
                "diffusion_probe_model_card.md.j2",
                data_args,
                training_args,
                ["self-supervised", "diffusion-features", head_args.head],
                "image-classification",
                head=head_args.head,
                unet=head_args.unet,
                blocks=head.config.blocks,
                timesteps=head.config.timesteps,
                noise=f"seed {head_args.noise_seed}, {head_args.noise_draws} draw(s)",
                labels=labels,
                accuracy=round(metrics["eval_accuracy"], 4),
            )
        if training_args.push_to_hub:
            trainer.push_to_hub(commit_message=f"free-atm {head_args.head} head on diffusion features")
    trainer.end_run()


if __name__ == "__main__":
    run_reporting_bad_input(main, "train_diffusion_probe.py")
