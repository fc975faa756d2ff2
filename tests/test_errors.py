"""Every failure a user can cause or meet ends in one line naming the value, path or row, with exit status
2 for bad input and 1 for the environment, no traceback, and nothing left that looks complete."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from free_atm.cli import main

ROOT = Path(__file__).resolve().parent.parent
GENERATE = ["generate", "--model", "tiny-random", "--num-images", "2", "--steps", "1"]


def run_in_process(arguments: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stop:
        main(arguments)
    return stop.value.code, capsys.readouterr().err


def looks_complete(folder: Path) -> bool:
    return folder.exists() and any(folder.rglob("*.parquet")) or any(folder.rglob("*.tmp"))


def full_disk_writer(written: int = 100):
    """A ``to_parquet`` whose file takes ``written`` bytes, then raises ``ENOSPC`` as a full disk would."""

    def to_parquet(self, path, *args, **kwargs):
        with open(path, "wb") as file:
            file.write(b"\0" * written)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    return to_parquet


def broken_model_folder(tmp_path: Path, index: str) -> str:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model_index.json").write_text(index)
    return str(folder)


CASES = {
    # name: (arguments given tmp_path, set-up given (tmp_path, monkeypatch), exit status, message pieces)
    "output under a file": (
        lambda t: [*GENERATE, "--out", str(t / "file" / "data")],
        lambda t, m: (t / "file").write_text("x"),
        2,
        ["--out", "lies under", "which is a file, not a folder"],
    ),
    "output not writable": (
        lambda t: [*GENERATE, "--out", str(t / "data")],
        lambda t, m: m.setattr(os, "access", lambda *a, **k: False),
        1,
        ["--out", "is not writable", "choose a place you can write to"],
    ),
    "disk full while writing": (
        lambda t: [*GENERATE, "--out", str(t / "data")],
        lambda t, m: m.setattr("datasets.Dataset.to_parquet", full_disk_writer()),
        1,
        ["no space left on the device writing", ".tmp", "rerun the command (it resumes)"],
    ),
    "writer refused by permissions": (
        lambda t: [*GENERATE, "--out", str(t / "data")],
        lambda t, m: m.setattr(
            "datasets.Dataset.to_parquet",
            lambda self, path, *a, **k: (_ for _ in ()).throw(
                PermissionError(errno.EACCES, "Permission denied", path)
            ),
        ),
        1,
        ["Permission denied", "choose a place you can write to"],
    ),
    "model index with bad capture settings": (
        lambda t: [
            *GENERATE[:1],
            "--model",
            broken_model_folder(t, '{"_class_name": "FreeATMDiffusionPipeline", "capture_config": {"thresold": 1}}'),
            "--out",
            str(t / "data"),
        ],
        None,
        2,
        ["model/model_index.json: its saved capture_config is not valid (unknown capture settings ['thresold']"],
    ),
    "model index with bad sampling settings": (
        lambda t: [
            *GENERATE[:1],
            "--model",
            broken_model_folder(t, '{"_class_name": "FreeATMDiffusionPipeline", "sampling_config": {"scheduler": 1}}'),
            "--out",
            str(t / "data"),
        ],
        None,
        2,
        ["model/model_index.json: its saved sampling_config is not valid (", "fix or remove it"],
    ),
    "model index not JSON": (
        lambda t: [*GENERATE[:1], "--model", broken_model_folder(t, ""), "--out", str(t / "data")],
        None,
        2,
        ["model_index.json is not valid JSON", "the model folder is damaged"],
    ),
    "model folder missing a component": (
        lambda t: [
            "generate",
            "--model",
            broken_model_folder(t, json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "X"]})),
            "--out",
            str(t / "data"),
        ],
        None,
        2,
        ["is incomplete: model_index.json lists 'unet'", "missing or empty"],
    ),
    "too many images": (
        lambda t: [*GENERATE[:5], "--num-images", str(10**13), "--out", str(t / "data")],
        None,
        2,
        ["--num-images 10000000000000 makes 39,062,500,000 shards", "at most 99,999 shards"],
    ),
    "retrieval folder without a processor": (
        lambda t: ["retrieval", str(t / "blip")],
        lambda t, m: (t / "blip").mkdir() or (t / "blip" / "config.json").write_text("{}"),
        2,
        ["has no processor_config.json or preprocessor_config.json", "saved with its processor"],
    ),
    "dataset path with a typo": (
        lambda t: ["show", "outputs/datset"],
        lambda t, m: (t / "outputs").mkdir() or m.chdir(t),
        2,
        ["dataset folder outputs/datset does not exist"],
    ),
    "damaged shard shown": (
        lambda t: ["show", str(t / "dataset")],
        lambda t, m: damaged_dataset(t / "dataset"),
        2,
        ["shard train-00000-of-00001.parquet is damaged", "rerun its free-atm generate"],
    ),
}


def damaged_dataset(folder: Path) -> None:
    from free_atm.world import shapes_dataset

    shard = folder / "data" / "train-00000-of-00001.parquet"
    shapes_dataset(2, seed=0).to_parquet(str(shard))
    shard.write_bytes(shard.read_bytes()[:100])


@pytest.mark.parametrize("case", list(CASES))
def test_each_failure_is_one_line_with_its_exit_status(case, tmp_path, capsys, monkeypatch):
    arguments, prepare, status, pieces = CASES[case]
    if prepare:
        prepare(tmp_path, monkeypatch)
    code, stderr = run_in_process(arguments(tmp_path), capsys)
    lines = [line for line in stderr.splitlines() if line.startswith("free-atm ")]
    assert code == status, stderr
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert all(piece in lines[0] for piece in pieces), lines[0]
    assert not looks_complete(tmp_path / "data")


def test_a_disk_that_fills_leaves_nothing_complete_and_the_rerun_resumes(tmp_path, capsys, monkeypatch):
    from free_atm.data.shards import check_complete

    out = tmp_path / "data"
    with monkeypatch.context() as patched:
        patched.setattr("datasets.Dataset.to_parquet", full_disk_writer(written=4096))
        code, _ = run_in_process([*GENERATE, "--out", str(out)], capsys)
    assert code == 1 and not looks_complete(out)
    with pytest.raises(ValueError, match="holds no finished shard yet"):
        check_complete(out)
    main([*GENERATE, "--out", str(out)])  # space again: the same command finishes the dataset
    check_complete(out)
    assert len(list((out / "data").glob("*.parquet"))) == 1


@pytest.mark.parametrize(
    ("command", "status", "pieces"),
    [
        (
            [sys.executable, "-m", "free_atm", "generate", "--model", "someone/model", "--num-images", "1"],
            1,
            ["model 'someone/model' could not be fetched from the Hugging Face Hub", "or pass a local folder"],
        ),
        (
            [sys.executable, "-m", "free_atm", "show", "./missing-dataset"],
            2,
            ["dataset folder missing-dataset does not exist"],
        ),
        (
            [sys.executable, "-m", "free_atm", "probe", "./missing-backbone"],
            2,
            ["backbone folder ./missing-backbone does not exist"],
        ),
        (
            [sys.executable, "-m", "free_atm", "retrieval", "owner/missing-blip"],
            1,
            ["model 'owner/missing-blip' could not be fetched from the Hugging Face Hub"],
        ),
        (
            [sys.executable, str(ROOT / "trainers" / "train_contrastive.py"), "--dataset_name", "shapes:4"]
            + ["--backbone_depths", "1", "1", "--backbone_widths", "8", "16", "32"],
            2,
            ["--backbone_depths [1, 1] and --backbone_widths [8, 16, 32] must name the same number of stages"],
        ),
    ],
)
def test_commands_in_their_own_process_fail_in_one_line(command, status, pieces, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    output = {"generate": ["--out", str(tmp_path / "out")], "show": ["--out", str(tmp_path / "out.png")]}
    trainer = [] if "-m" in command else ["--output_dir", str(tmp_path / "out")]
    result = subprocess.run(
        [*command, *next((v for k, v in output.items() if k in command), trainer)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and all(piece in errors[0] for piece in pieces), result.stderr[-3000:]


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: not enough memory: you tried to"),
        RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    ],
)
def test_a_failed_allocation_is_the_memory_line_wherever_torch_reports_it(error):
    from free_atm.usage import describe_failure

    assert describe_failure(error) == (
        "out of memory; lower the batch size or the image size, or use a machine with more memory",
        1,
    )
    assert describe_failure(RuntimeError("a bug")) is None  # any other RuntimeError keeps its traceback
