"""Model cards of the training scripts, rendered from ``hub_cards/``: what every framework's card shares."""

from __future__ import annotations

from huggingface_hub import ModelCard, ModelCardData
from transformers import TrainingArguments

from ..data.card import card_template
from .arguments import DataArguments


def write_model_card(
    template: str,
    data_args: DataArguments,  # or any arguments with a dataset_name
    training_args: TrainingArguments,
    tags: list[str],
    pipeline_tag: str,
    library_name: str = "transformers",
    base_model: str | None = None,
    **fields,
) -> None:
    """Render ``hub_cards/{template}`` into ``output_dir/README.md`` with the fields every card has (name,
    data and mix, steps, batch size, where to load it from) and the framework's own ``fields``; an adapter
    names its ``library_name`` (diffusers) and ``base_model``."""
    datasets = [data_args.dataset_name]
    if getattr(data_args, "real_dataset_name", None) and data_args.real_ratio:
        datasets.append(f"{data_args.real_dataset_name} ({data_args.real_ratio:.0%})")
    card = ModelCard.from_template(
        ModelCardData(
            library_name=library_name,
            license="apache-2.0",
            tags=["free-atm", *tags],
            pipeline_tag=pipeline_tag,
            base_model=base_model,
        ),
        template_str=card_template(template),
        model_name=training_args.hub_model_id or training_args.output_dir.rstrip("/").split("/")[-1],
        datasets=datasets,
        steps=training_args.max_steps,
        batch_size=training_args.per_device_train_batch_size,
        repo_or_path=training_args.hub_model_id or training_args.output_dir,
        **fields,
    )
    card.save(f"{training_args.output_dir}/README.md")
