"""BLIP pretraining with position prompts (Free-ATM section 3.3.3) on a free-atm dataset.

    accelerate launch --cpu --num_processes 1 trainers/train_blip.py \
        --dataset_name outputs/dataset --output_dir outputs/blip --max_steps 2000
    torchrun --nproc_per_node 2 trainers/train_blip.py ...

Every caption gets, for each object, "The [O] is in block [P]." with the block where the object's mask
lies after the image's crop and flip (``--position_prompts all|one|none``, ``--grid``); the model trains
BLIP's ITC, ITM and LM losses together. ``--model_name_or_path`` starts from a BLIP checkpoint and its
tokenizer; else a small new BLIP with a WordPiece tokenizer learned from the captions. The output holds
the whole pretraining model, ``retrieval/`` (transformers' ``BlipForImageTextRetrieval``) and
``captioning/`` (``BlipForConditionalGeneration``), each with its ``BlipProcessor``, and a model card.
A killed run goes on from its last checkpoint when the same command is run again.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from transformers import BlipProcessor

from free_atm.training.arguments import FreeATMTrainingArguments, ScriptArgumentParser
from free_atm.training.blip import captioning_export, retrieval_export
from free_atm.training.blip.evaluation import RetrievalCallback
from free_atm.training.blip.recipe import BlipDataArguments, BlipModelArguments, blip_trainer
from free_atm.training.cards import write_model_card
from free_atm.training.run import training_run
from free_atm.usage import run_reporting_bad_input


def main() -> None:
    parser = ScriptArgumentParser((BlipModelArguments, BlipDataArguments, FreeATMTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    trainer = blip_trainer(model_args, data_args, training_args)  # checks the data before anything is written
    settings = {**asdict(model_args), **asdict(data_args)}
    with training_run(training_args, settings) as resume:
        result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()
        if trainer.is_world_process_zero():
            out = Path(training_args.output_dir)
            processor = BlipProcessor(trainer.image_processor, trainer.processing_class)
            processor.save_pretrained(out)
            for name, export in (("retrieval", retrieval_export), ("captioning", captioning_export)):
                export(trainer.model).save_pretrained(out / name)
                processor.save_pretrained(out / name)
            # a run shorter than the logging interval logs no loss parts, and one shorter than the evaluation
            # interval measures no retrieval: the card gives what was measured
            last = next((log for log in reversed(trainer.state.log_history) if "loss_itc" in log), {})
            metrics = {
                "train_loss": round(result.training_loss, 4),
                **{k: last[k] for k in ("loss_itc", "loss_itm", "loss_lm") if k in last},
            }
            for retrieval in (c for c in trainer.callback_handler.callbacks if isinstance(c, RetrievalCallback)):
                if retrieval.history:
                    metrics.update({k: round(v, 2) for k, v in retrieval.history[-1].items() if k != "step"})
            blip_card(model_args, data_args, training_args, trainer, metrics)
        if training_args.push_to_hub:
            trainer.push_to_hub(commit_message="free-atm BLIP pretraining with position prompts")
    trainer.end_run()


def blip_card(model_args, data_args, training_args, trainer, metrics: dict) -> None:
    vision, text = trainer.model.config.vision_config, trainer.model.config.text_config
    write_model_card(
        "blip_model_card.md.j2",
        data_args,
        training_args,
        ["self-supervised", "blip", "vision-language"],
        "image-text-to-text",
        prompts=data_args.position_prompts,
        grid=data_args.grid,
        start=model_args.model_name_or_path or "a new model",
        architecture=(
            f"vision: ViT, {vision.num_hidden_layers} layers of width {vision.hidden_size}, patch "
            f"{vision.patch_size}, {vision.image_size} px; text: BERT, {text.num_hidden_layers} layers of width "
            f"{text.hidden_size}, {text.vocab_size} tokens"
        ),
        metrics=metrics,
    )


if __name__ == "__main__":
    run_reporting_bad_input(main, "train_blip.py")
