"""The reproduction's run cache and table writer (the reproduction itself is not part of CI)."""

from __future__ import annotations

import json

import pytest
import torch

from free_atm.evaluation.reproduction.cache import RunCache
from free_atm.evaluation.reproduction.plan import planned_runs, shard_names
from free_atm.evaluation.reproduction.runs import ROW_DATA, MultiHotCollator, Sources
from free_atm.evaluation.reproduction.settings import SETTINGS
from free_atm.evaluation.reproduction.tables import format_tables
from free_atm.seeds import derive_seed
from free_atm.training import ObjectMapCollator
from free_atm.world import shapes_dataset
from free_atm.world.render import SHAPES, render_scene

RESULTS = {
    "table1": {
        "random_init": {"seg_miou": [0.10, 0.20, 0.30], "probe_accuracy": [0.5, 0.5, 0.5]},
        "synthetic": {"seg_miou": [0.40, 0.44, 0.48], "probe_accuracy": [0.6, 0.7, 0.8]},
        "synthetic_ours": {"seg_miou": [0.50, 0.50, 0.50], "probe_accuracy": [0.9, 0.8, 0.7]},
        "real": {"seg_miou": [0.45], "probe_accuracy": [0.75]},
    },
    "table2": {"synthetic": {"txt_r1": [0.2, 0.3], "img_r1": [0.1, 0.1]}},
    "table6": {"1000": {"seg_miou": [0.5, 0.6]}, "250": {"seg_miou": [0.3, 0.3], "probe_accuracy": [0.4, 0.6]}},
}

EXPECTED = """**Table 1: SimCLR (ResNet)**

| | seg. mIoU | linear probe acc |
|---|---|---|
| random init | 20.0 ± 10.0 | 50.0 ± 0.0 |
| real | 45.0 (1 seed) | 75.0 (1 seed) |
| synthetic | 44.0 ± 4.0 | 70.0 ± 10.0 |
| synthetic w/ ours | 50.0 ± 0.0 (+6.0) | 80.0 ± 10.0 (+10.0) |

**Table 2: BLIP, positional retrieval R@1**

| | tr@1 | ir@1 |
|---|---|---|
| synthetic | 25.0 ± 7.1 | 10.0 ± 0.0 |

**Table 6: MoCo-v2 w/ ours, more synthetic images**

| synthetic images | 250 | 1000 |
|---|---|---|
| seg. mIoU | 30.0 ± 0.0 | 55.0 ± 7.1 |
| linear probe acc | 50.0 ± 14.1 | – |
"""


def test_tables_in_the_papers_layout_from_a_hand_made_results_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(RESULTS))  # table 6's counts come back from JSON as strings
    assert format_tables(json.loads(path.read_text())) == EXPECTED


def test_cache_skips_finished_runs_and_reruns_changed_settings(tmp_path):
    calls = []

    def compute(value):
        def run():
            calls.append(value)
            return {"seg_miou": value}

        return run

    cache = RunCache(tmp_path)
    settings = {"steps": 10, "backbone": [8, 16]}
    assert cache.run("simclr/real/seed0", settings, compute(0.5)) == {"seg_miou": 0.5}
    assert RunCache(tmp_path).run("simclr/real/seed0", dict(settings), compute(0.9)) == {"seg_miou": 0.5}
    assert calls == [0.5]  # a second cache on the same folder (a rerun) found it
    assert cache.run("simclr/real/seed0", {**settings, "steps": 20}, compute(0.7)) == {"seg_miou": 0.7}
    assert cache.run("simclr/real/seed1", settings, compute(0.6)) == {"seg_miou": 0.6}
    assert calls == [0.5, 0.7, 0.6]
    assert cache.get("simclr/real/seed0", settings) == {"seg_miou": 0.5}
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_run_that_fails_leaves_nothing_behind(tmp_path):
    cache = RunCache(tmp_path)

    def broken():
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        cache.run("mae/real/seed0", {}, broken)
    assert cache.get("mae/real/seed0", {}) is None and not list(tmp_path.rglob("*.json"))


def test_rows_differ_only_in_data_and_method():
    sources = Sources(real="r", synthetic="s", annotated="a")
    assert sources.data_arguments("real") == {"dataset_name": "r"}
    assert sources.data_arguments("synthetic") == sources.data_arguments("synthetic_ours") == {"dataset_name": "s"}
    mix = sources.data_arguments("mix_ours")
    assert mix == {"dataset_name": "s", "real_dataset_name": "a", "real_ratio": 0.5}  # real images, free masks
    assert [ROW_DATA[row][1] for row in ("real", "synthetic", "synthetic_ours", "mix_ours")] == [0, 0, 1, 1]


def test_supervised_labels_are_the_kinds_each_image_shows():
    scenes = shapes_dataset(4, seed=3)
    batch = MultiHotCollator(ObjectMapCollator(64))([scenes[i] for i in range(4)])
    for i in range(4):
        shown = {SHAPES.index(render_scene(derive_seed(3, i)).shapes[m]) for m in range(len(scenes[i]["labels"]))}
        assert set(torch.nonzero(batch["labels"][i]).flatten().tolist()) == shown
    assert batch["pixel_values"].shape == (4, 3, 64, 64) and set(batch) == {"pixel_values", "labels"}


def test_the_plan_makes_shared_runs_once_and_shards_split_it_without_overlap():
    settings = SETTINGS["quick"]  # 3 seeds, scaling counts 128, 256 and 512 (= the main synthetic count)
    plan = planned_runs(["table1", "table3", "table6"], settings)
    names = [run.name(settings) for run in plan]
    assert len(plan) == 3 * (6 + 6 + 3)
    # per seed: random init and supervised shared by SimCLR and MoCo, 4 rows each, table 6's 512 = MoCo's w/ ours
    assert len(set(names)) == 3 * (2 + 4 + 4 + 2)
    assert names.count("resnet/supervised/seed1") == 2 and names.count("moco/synthetic_ours/seed2") == 2
    assert "moco/synthetic_ours_128/seed0" in names
    assert names.index("simclr/mix_ours/seed0") < names.index("simclr/real/seed1")  # a seed of every row first
    shards = [shard_names(plan, settings, index, 3) for index in range(3)]
    assert set().union(*shards) == set(names) and sum(map(len, shards)) == len(set(names))
    assert {len(shard) for shard in shards} == {12}
    with pytest.raises(ValueError, match="shard index must be in \\[0, 3\\), got 3"):
        shard_names(plan, settings, 3, 3)
