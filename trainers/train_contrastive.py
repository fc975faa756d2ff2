"""Instance-level (or image-level) contrastive pretraining on a free-atm dataset.

    accelerate launch --cpu --num_processes 1 trainers/train_contrastive.py \
        --dataset_name outputs/dataset --output_dir outputs/simclr --max_steps 500
    torchrun --nproc_per_node 2 trainers/train_contrastive.py ...

``--dataset_name`` is a dataset folder, a Hub id, or ``shapes:N`` (N rendered shapes-world scenes, whose
exact masks serve as the maps). ``--real_dataset_name`` with ``--real_ratio`` mixes a second source in
(the paper's "mix"). The output holds the whole model and ``backbone/`` for ``AutoModel.from_pretrained``.
A run killed at any point goes on from its last checkpoint (``--save_steps``) when the same command is
run again, with the optimiser, scheduler, RNG and MoCo's key encoder and queue as they were.
"""

from __future__ import annotations

from dataclasses import asdict

from free_atm.training import ContrastiveArguments, ProbeCallback, contrastive_trainer
from free_atm.training.arguments import FreeATMTrainingArguments, ScriptArgumentParser
from free_atm.training.cards import write_model_card
from free_atm.training.collate import collator_image_processor
from free_atm.training.run import training_run
from free_atm.usage import run_reporting_bad_input


def main() -> None:
    args, training_args = ScriptArgumentParser(
        (ContrastiveArguments, FreeATMTrainingArguments)
    ).parse_args_into_dataclasses()
    trainer = contrastive_trainer(args, training_args)  # checks the data before anything is written
    with training_run(training_args, asdict(args)) as resume:
        result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()
        if trainer.is_world_process_zero():
            metrics = {"train_loss": round(result.training_loss, 4)}
            for probe in (c for c in trainer.callback_handler.callbacks if isinstance(c, ProbeCallback)):
                for name in ("knn_accuracy", "linear_accuracy"):
                    metrics[f"{name} (shapes world, object level)"] = round(probe.history[-1][name], 4)
            trainer.model.backbone.save_pretrained(f"{training_args.output_dir}/backbone")
            processor = collator_image_processor(args.image_size)  # what the model was fed, for AutoImageProcessor
            for folder in (training_args.output_dir, f"{training_args.output_dir}/backbone"):
                processor.save_pretrained(folder)
            contrastive_card(args, training_args, metrics)
        if training_args.push_to_hub:
            trainer.push_to_hub(commit_message="free-atm contrastive pretraining")
    trainer.end_run()


def contrastive_card(args: ContrastiveArguments, training_args: FreeATMTrainingArguments, metrics: dict) -> None:
    name = {"simclr": "SimCLR", "moco": "MoCo-v2"}[args.method]
    descriptions = {
        "instance": f"instance-level {name}: features attentively pooled per object mask, positives are "
        "the same object in two crops",
        "image": f"image-level {name} (the baseline)",
    }
    write_model_card(
        "contrastive_model_card.md.j2",
        args,
        training_args,
        ["self-supervised", "contrastive", args.method],
        "image-feature-extraction",
        method=args.method,
        level=args.level,
        method_description=descriptions[args.level],
        backbone=f"ResNet {args.backbone_layer_type}, depths {args.backbone_depths}, widths {args.backbone_widths}",
        metrics=metrics,
    )


if __name__ == "__main__":
    run_reporting_bad_input(main, "train_contrastive.py")
