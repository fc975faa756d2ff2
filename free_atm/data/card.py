"""Dataset cards rendered from ``hub_cards/dataset_card.md.j2``."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from datasets import Features
from huggingface_hub import DatasetCard, DatasetCardData

from ..paths import local_path


def card_template(name: str) -> str:
    """The text of a card template shipped in ``hub_cards/``."""
    return (resources.files("free_atm.hub_cards") / name).read_text(encoding="utf-8")


def render_dataset_card(
    root: str | Path,
    features: Features,
    config: dict[str, Any],
    counts: dict[str, Any],
    sample_grid: str = "sample_grid.png",
    repo_or_path: str | None = None,
) -> DatasetCard:
    """The card of the dataset in ``root``: features YAML, generation config, counts.

    Pitfall: no ``configs`` entry. ``data/train-*`` is what ``datasets`` finds on its own, and with the
    pattern written in the card ``load_dataset(folder)`` keys its cache on the folder's name and the
    pattern, not on the files: a second dataset in a folder of the same name loaded the first one's rows.
    """
    card_data = DatasetCardData(
        pretty_name=f"free-atm masks from {config['model']}",
        # generated images are bound by the generator's license, which the model's own card states
        license="other",
        license_name="generator-license",
        license_link=_model_page(config["model"]),
        annotations_creators=["machine-generated"],
        source_datasets=["original"],
        task_categories=["image-segmentation", "object-detection", "text-to-image"],
        tags=["free-atm", "synthetic", "attention-masks", "diffusers"],
        size_categories=[_size_category(counts["images"])],
        dataset_info={"features": features._to_yaml_list()},
    )
    return DatasetCard.from_template(
        card_data,
        template_str=card_template("dataset_card.md.j2"),
        config=config,
        config_json=json.dumps(config, indent=2),
        counts=counts,
        sample_grid=sample_grid,
        repo_or_path=repo_or_path or str(root),
    )


def _model_page(model: str) -> str:
    """Where the generator's license is written: a Hub model's page, else (the shipped models, a local
    folder) free-atm's own license."""
    if "/" in model and not local_path(model).exists():
        return f"https://huggingface.co/{model}"
    return "https://github.com/free-atm/free-atm/blob/main/LICENSE"


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"
