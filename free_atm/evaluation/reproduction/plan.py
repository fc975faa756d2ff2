"""Which runs the reproduction makes, in which order, under which names, and which of them a shard runs.

A run is one seed of one row of one table. Some runs appear in two tables and are made once: SimCLR's and
MoCo-v2's random-init and supervised rows are the same ResNet runs (named ``resnet/...``), and table 6's
column at the main synthetic count is table 3's "w/ ours" row. Shards therefore split the *names*, not
the plan's entries, so two processes never make the same run.
"""

from __future__ import annotations

from typing import NamedTuple

from .settings import ReproductionSettings
from .tables import TABLES

FRAMEWORKS = {"table1": "simclr", "table2": "blip", "table3": "moco", "table4": "mae"}
SHARED_ROWS = ("random_init", "supervised")  # one ResNet run serves SimCLR's and MoCo's tables


class PlannedRun(NamedTuple):
    table: str
    framework: str
    row: str
    count: int  # synthetic images
    seed: int

    def name(self, settings: ReproductionSettings) -> str:
        """The run's cache name: ``owner/row[_count]/seedN``."""
        suffix = f"_{self.count}" if self.count != settings.synthetic_images else ""
        return f"{self.owner}/{self.row}{suffix}/seed{self.seed}"

    @property
    def owner(self) -> str:
        """``resnet`` for the rows SimCLR and MoCo-v2 share, else the framework."""
        shared = self.framework in ("simclr", "moco") and self.row in SHARED_ROWS
        return "resnet" if shared else self.framework

    def identity(self, settings: ReproductionSettings) -> dict:
        """Everything the run's result depends on (a cached result with another identity is rerun)."""
        return {
            **settings.as_dict(),
            "framework": self.owner,
            "row": self.row,
            "synthetic": self.count,
            "seed": self.seed,
        }


def planned_runs(tables: list[str], settings: ReproductionSettings) -> list[PlannedRun]:
    """Every run of ``tables``, seed by seed: a stopped reproduction has the first seed of every row before
    the second of any, so every table fills."""
    plan = []
    for seed in settings.seeds:
        for table in tables:
            if table == "table6":
                plan += [PlannedRun(table, "moco", "synthetic_ours", count, seed) for count in settings.scaling_counts]
                continue
            framework = FRAMEWORKS[table]
            plan += [PlannedRun(table, framework, row, settings.synthetic_images, seed) for row in TABLES[table].rows]
    return plan


def shard_names(plan: list[PlannedRun], settings: ReproductionSettings, index: int, shards: int) -> set[str]:
    """The names shard ``index`` of ``shards`` makes: every ``shards``-th distinct name in plan order."""
    if not 0 <= index < shards:
        raise ValueError(f"shard index must be in [0, {shards}), got {index}")
    names = list(dict.fromkeys(run.name(settings) for run in plan))
    return set(names[index::shards])
