"""The ImageNet-1k label space, shipped as data: names and a coarse group per class."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

GROUPS = ("animal", "vehicle", "food", "object", "plant", "person", "scene")


@dataclass(frozen=True)
class ImageNetClass:
    """One class: its index, WordNet id, names (the first is used in prompts) and coarse group."""

    index: int
    wnid: str
    names: tuple[str, ...]
    group: str

    @property
    def name(self) -> str:
        return self.names[0]


@cache
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """The 1,000 classes in index order."""
    text = (resources.files("free_atm.prompts") / "imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = csv.DictReader((line for line in text.splitlines() if not line.startswith("#")), delimiter="\t")
    return tuple(
        ImageNetClass(int(r["index"]), r["wnid"], tuple(n.strip() for n in r["names"].split(",")), r["group"])
        for r in rows
    )


def imagenet_vocabulary() -> list[str]:
    """Every name of the ImageNet-1k classes: the object phrases looked for in prompts that name none."""
    return [name for label in imagenet_classes() for name in label.names]
