"""Sharded, resumable dataset generation: processes, crashes, truncated shards, cards and the Hub."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset
from hub_fake import fake_hub
from PIL import Image

from free_atm.cli import main
from free_atm.data import sample_features
from free_atm.data.shards import ShardPlan
from free_atm.seeds import derive_seed

ARGS = ["--model", "tiny-random", "--num-images", "8", "--shard-size", "2", "--batch-size", "2", "--steps", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def command(out: Path, *extra: str, processes: int = 1) -> list[str]:
    if processes == 1:
        launcher = [sys.executable, "-m", "free_atm"]
    else:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            "-m",
            "free_atm",
        ]
    return [*launcher, "generate", *ARGS, "--out", str(out), *extra]


def generate(out: Path, *extra: str, processes: int = 1) -> subprocess.CompletedProcess:
    result = subprocess.run(command(out, *extra, processes=processes), env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def rows(out: Path) -> dict[int, tuple]:
    """seed -> (prompt, objects, image bytes, mask bytes, boxes) of every row, read from the shards."""
    table = pq.read_table(sorted((out / "data").glob("train-*.parquet")))
    result = {}
    for row in table.to_pylist():
        assert row["seed"] not in result, "duplicate sample"
        result[row["seed"]] = (
            row["prompt"],
            row["objects"],
            row["image"]["bytes"],
            [m["bytes"] for m in row["masks"]],
            row["boxes"],
        )
    return result


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("reference")
    generate(out)
    return out, rows(out)


def test_single_process_run_is_a_loadable_dataset(reference):
    out, by_seed = reference
    assert sorted(by_seed) == sorted(derive_seed(0, i) for i in range(8))
    assert sorted(p.name for p in (out / "data").iterdir()) == [f"train-{i:05d}-of-00004.parquet" for i in range(4)]
    dataset = load_dataset(str(out), split="train")
    assert dataset.features == sample_features() and len(dataset) == 8
    streamed = load_dataset(str(out), split="train", streaming=True)
    assert streamed.features == sample_features()
    first = next(iter(streamed))
    assert first["image"].size == (64, 64) and len(first["masks"]) == len(first["objects"]) == len(first["boxes"])
    card = (out / "README.md").read_text()
    assert "name: masks" in card and "| images | 8 |" in card
    assert '"model": "tiny-random"' in card and (out / "sample_grid.png").is_file()


def test_a_folder_of_the_same_name_loads_its_own_rows(reference, tmp_path):
    """load_dataset's cache must follow the files, not the folder's name (a card pattern made it)."""
    out, _ = reference
    load_dataset(str(out), split="train")  # cached first
    other = tmp_path / out.name
    shutil.copytree(out, other)
    for shard in sorted((other / "data").iterdir())[2:]:
        shard.unlink()
    assert len(load_dataset(str(other), split="train")) == 4


def test_two_processes_split_the_shards_and_match_one(reference, tmp_path):
    plan = ShardPlan(8, 2)
    first, second = plan.shards_of_process(0, 2), plan.shards_of_process(1, 2)
    assert not set(first) & set(second) and sorted(first + second) == list(range(4))
    generate(tmp_path, processes=2)
    assert rows(tmp_path) == reference[1]


def test_killed_run_resumes_to_the_same_dataset(reference, tmp_path):
    process = subprocess.Popen(command(tmp_path), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((tmp_path / "data").glob("train-*.parquet")) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = list((tmp_path / "data").glob("train-*.parquet"))
    assert 1 <= len(finished) < 4, "the run was not interrupted mid-way"
    assert not (tmp_path / "README.md").exists()  # no card on an unfinished dataset
    generate(tmp_path)
    assert rows(tmp_path) == reference[1]


def test_an_unfinished_generation_is_refused_by_the_trainers_and_show(reference, tmp_path, capsys):
    """A generation stopped between shards (or before the first) is not taken for a dataset: trainers and
    show refuse it with the count found and expected, unless asked to use what is there."""
    from free_atm.training.sources import load_source

    folder = tmp_path / "stopped"
    shutil.copytree(reference[0], folder)
    for shard in sorted((folder / "data").iterdir())[1:3]:
        shard.unlink()
    with pytest.raises(ValueError, match="is incomplete: 2 of 4 shards; rerun its free-atm generate command"):
        load_source(str(folder))
    assert len(load_source(str(folder), allow_incomplete=True)) == 4
    with pytest.raises(SystemExit) as exit_info:
        main(["show", str(folder), "--out", str(tmp_path / "grid.png")])
    assert exit_info.value.code == 2 and "is incomplete: 2 of 4 shards" in capsys.readouterr().err
    main(["show", str(folder), "--out", str(tmp_path / "grid.png"), "--allow-incomplete"])
    assert (tmp_path / "grid.png").is_file()
    shutil.rmtree(folder / "data")  # stopped before its first shard: only the settings file is there
    with pytest.raises(ValueError, match="holds no finished shard yet"):
        load_source(str(folder))


def test_two_writers_started_together_exclude_each_other(reference, tmp_path, capsys):
    """A second run into a folder that a first run is writing is refused (with other settings it would
    pass the settings check, made before anything is written, and interleave its shards); the first
    finishes the same dataset as ever, and a crashed writer leaves no lock behind."""
    from free_atm.data.lock import lock_path, writer_lock

    out = tmp_path / "out"
    first = subprocess.Popen(command(out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (lock_path(out).is_file() and lock_path(out).read_text().strip()) and time.time() < deadline:
        time.sleep(0.02)
    run_in_process(out, "--seed", "5")
    assert f"is being written by another free-atm generate (process {first.pid})" in capsys.readouterr().err
    assert first.wait(timeout=300) == 0
    assert rows(out) == reference[1]
    with writer_lock(out):  # released at the end: the lock can be taken again
        pass


def test_truncated_shard_is_regenerated(reference, tmp_path):
    shutil.copytree(reference[0], tmp_path, dirs_exist_ok=True)
    shard = tmp_path / "data" / "train-00002-of-00004.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    assert not ShardPlan(8, 2).is_complete(tmp_path, 2)
    generate(tmp_path)
    assert rows(tmp_path) == reference[1]


def run_in_process(out: Path, *extra: str) -> None:
    """``free-atm generate`` in this process, expected to stop on bad input with exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", *ARGS, "--out", str(out), *extra])
    assert exit_info.value.code == 2


def test_resuming_with_other_settings_is_refused(reference, tmp_path, capsys):
    shutil.copytree(reference[0], tmp_path, dirs_exist_ok=True)
    run_in_process(tmp_path, "--seed", "1")
    assert "generated with other settings (seed differ)" in capsys.readouterr().err


def test_capture_flags_change_the_masks_and_are_recorded(reference, tmp_path):
    """A higher fixed threshold keeps a subset of each reference mask (the default is fixed at 0.4) from the
    same maps and images; the settings are in the config file and the card."""
    generate(tmp_path, "--threshold-method", "fixed", "--threshold", "0.9")  # as the reference: one thread
    ours, theirs = rows(tmp_path), reference[1]
    assert sorted(ours) == sorted(theirs)
    kept = total = 0
    for seed, (prompt, objects, image, masks, _) in ours.items():
        assert (prompt, objects, image) == theirs[seed][:3]
        for mine, reference_mask in zip(masks, theirs[seed][3]):
            high, low = (np.asarray(Image.open(io.BytesIO(m))) > 0 for m in (mine, reference_mask))
            assert not (high & ~low).any()
            kept, total = kept + high.sum(), total + low.sum()
    assert kept < total
    recorded = json.loads((tmp_path / "generation_config.json").read_text())
    assert recorded["threshold"] == 0.9 and recorded["capture_config"]["threshold"] == 0.9
    assert "| threshold | 0.9 |" in (tmp_path / "README.md").read_text()
    assert "| threshold | 0.4 |" in (reference[0] / "README.md").read_text()


def test_dtype_loads_the_weights_in_half_precision(tmp_path, monkeypatch):
    import torch

    import free_atm.models as models

    loaded, original = [], models.load_pipeline
    monkeypatch.setattr(models, "load_pipeline", lambda *args: loaded.append(args[2]) or original(*args))
    main(["generate", *ARGS, "--out", str(tmp_path), "--num-images", "2", "--dtype", "bfloat16"])
    assert loaded == [torch.bfloat16]
    assert len(load_dataset(str(tmp_path), split="train")) == 2
    assert json.loads((tmp_path / "generation_config.json").read_text())["dtype"] == "bfloat16"


def test_resuming_with_other_capture_settings_is_refused(reference, tmp_path, capsys):
    shutil.copytree(reference[0], tmp_path, dirs_exist_ok=True)
    run_in_process(tmp_path, "--layer-scales", "1")
    assert "generated with other settings (layer_scales differ)" in capsys.readouterr().err
    config = tmp_path / "generation_config.json"
    recorded = json.loads(config.read_text())
    recorded["capture_config"]["threshold_method"] = "otsu"  # the model's saved settings changed since
    config.write_text(json.dumps(recorded))
    run_in_process(tmp_path)
    assert "generated with other settings (capture_config differ)" in capsys.readouterr().err
    assert json.loads(config.read_text()) == recorded


def test_resuming_after_the_prompt_file_changed_is_refused(tmp_path, capsys):
    """The resume check reads the prompt file's content, not its path."""
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt,objects\na dog in the park,dog\n")
    main(["generate", *ARGS, "--num-images", "2", "--prompts", str(prompts), "--out", str(tmp_path / "out")])
    prompts.write_text("prompt,objects\na cat in the park,cat\n")
    run_in_process(tmp_path / "out", "--num-images", "2", "--prompts", str(prompts))
    assert "generated with other settings (prompts_sha256 differ)" in capsys.readouterr().err


def test_bad_prompt_file_is_a_clear_error(tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a dog", "objects": ["cat"]}\n')
    run_in_process(tmp_path / "out", "--prompts", str(prompts))
    assert "prompts.jsonl:1: object 'cat' does not occur in prompt 'a dog'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_prompt_file_drives_generation(tmp_path):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt,objects\na red circle and a blue square,red circle;blue square\na dog,dog\n")
    generate(tmp_path / "out", "--prompts", str(prompts), "--num-images", "3")
    dataset = load_dataset(str(tmp_path / "out"), split="train")
    assert dataset["prompt"] == ["a red circle and a blue square", "a dog", "a red circle and a blue square"]
    assert dataset["objects"][0] == ["red circle", "blue square"]


def test_push_to_hub_uploads_card_and_shards(reference, monkeypatch):
    from free_atm.data.hub import push_dataset

    out, _ = reference
    with fake_hub(monkeypatch) as hub:
        url = push_dataset(out, "me/free-atm-demo")
    assert url == "https://huggingface.co/datasets/me/free-atm-demo"
    assert hub.created == [{"name": "free-atm-demo", "organization": "me", "type": "dataset"}]
    assert sorted(hub.uploaded) == [
        "README.md",
        *[f"data/train-{i:05d}-of-00004.parquet" for i in range(4)],
        "generation_config.json",
        "sample_grid.png",
    ]
    assert (
        hub.uploaded["data/train-00001-of-00004.parquet"] == (out / "data/train-00001-of-00004.parquet").read_bytes()
    )
    assert json.loads(hub.uploaded["generation_config.json"])["num_images"] == 8


@pytest.mark.parametrize(
    ("token", "message"),
    [(None, "needs a Hub login: run `hf auth login` or set HF_TOKEN"), ("hf_wrong", "the Hub refused the token")],
)
def test_push_to_hub_checks_the_login_before_the_model_loads(token, message, tmp_path, capsys, monkeypatch):
    import free_atm.models as models

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the Hub login was checked")

    monkeypatch.setattr(models, "load_pipeline", no_loading)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no token file from this machine
    with fake_hub(monkeypatch):
        if token is None:
            monkeypatch.delenv("HF_TOKEN")
        else:
            monkeypatch.setenv("HF_TOKEN", token)
        run_in_process(tmp_path / "out", "--push-to-hub", "me/free-atm-demo")
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _confidence_cut(lowest: list[float], candidates: dict[int, list[int]], rows_per_shard: int) -> float:
    """The highest cut between two of the ``lowest`` confidences (per sample index) that drops one of the
    shards' own rows and still fills every shard from its ``candidates``."""
    values = sorted(set(lowest), reverse=True)
    for high, low in zip(values, values[1:]):
        cut = (high + low) / 2
        passing = {s: [i for i in c if lowest[i] >= cut] for s, c in candidates.items()}
        drops = any(lowest[i] < cut for c in candidates.values() for i in c[:rows_per_shard])
        if drops and all(len(p) >= rows_per_shard for p in passing.values()):
            return cut
    raise AssertionError(f"no cut of {lowest} replaces a row from the candidates {candidates}")


def test_min_confidence_keeps_the_first_candidates_that_reach_it_and_resumes(reference, tmp_path):
    table = pq.read_table(sorted((reference[0] / "data").glob("train-*.parquet"))).to_pylist()
    by_seed = {row["seed"]: row for row in table}
    lowest = [min(by_seed[derive_seed(0, i)]["confidence"], default=1.0) for i in range(8)]
    # a 4-image run in shards of 2 draws shard 0 from indices 0, 1, then 4, 6, ...; shard 1 from 2, 3, then 5, 7, ...
    candidates = {0: [0, 1, 4, 6], 1: [2, 3, 5, 7]}
    cut = _confidence_cut(lowest, candidates, 2)
    out = tmp_path / "confident"
    generate(out, "--num-images", "4", "--min-confidence", str(cut))
    kept = {s: [i for i in c if lowest[i] >= cut][:2] for s, c in candidates.items()}
    written = pq.read_table(sorted((out / "data").glob("train-*.parquet"))).to_pylist()
    assert [row["seed"] for row in written] == [derive_seed(0, i) for s in (0, 1) for i in kept[s]]
    for row in written:
        assert min(row["confidence"]) >= cut
        assert row["confidence"] == pytest.approx(by_seed[row["seed"]]["confidence"], abs=1e-5)
    dropped = sum(lowest[i] < cut for s, c in candidates.items() for i in c[: c.index(kept[s][-1])])
    card = (out / "README.md").read_text()
    assert f"| minimum confidence of a mask | {cut} |" in card
    assert f"| images drawn and dropped (a mask below it), replaced by further draws | {dropped} |" in card
    before = rows(out)
    ShardPlan(4, 2).path(out, 1).unlink()
    generate(out, "--num-images", "4", "--min-confidence", str(cut))
    assert rows(out) == before


def test_show_draws_the_dataset(reference, tmp_path):
    from PIL import Image

    from free_atm.cli import main

    main(["show", str(reference[0]), "--out", str(tmp_path / "grid.png"), "--num-samples", "3", "--cell", "128"])
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    # three 128 px cells 4 px apart, each with a caption band under its image
    assert grid.shape[1] == 3 * 128 + 2 * 4 and grid.shape[0] > 128 + 20


def test_the_console_of_a_run_holds_its_progress_and_result_only(tmp_path):
    result = generate(tmp_path / "quiet")
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and all(line.startswith("generating") for line in lines), lines  # no library warning or bar
    assert result.stdout.strip().splitlines() == [
        f"dataset in {tmp_path / 'quiet'} (sample grid: {tmp_path / 'quiet' / 'sample_grid.png'})"
    ]
