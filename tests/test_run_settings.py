"""A training folder remembers its run's settings; a rerun with other settings is refused by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from free_atm.run_settings import RUN_SETTINGS, check_run_settings, last_complete_checkpoint, record_run_settings

ROOT = Path(__file__).resolve().parents[1]


def test_a_rerun_with_other_settings_is_refused_naming_what_differs(tmp_path):
    check_run_settings(tmp_path, {"lr": 1e-3})  # nothing recorded yet: a new run
    record_run_settings(tmp_path / "run", {"lr": 1e-3, "steps": 100, "widths": [48, 96]})
    check_run_settings(tmp_path / "run", {"lr": 5e-4})  # only the record: nothing to resume, any settings
    (tmp_path / "run" / "weights.ckpt").write_bytes(b"progress")
    check_run_settings(tmp_path / "run", {"lr": 1e-3, "steps": 100, "widths": [48, 96]})
    check_run_settings(tmp_path / "run", {"lr": 1e-3, "steps": 900, "widths": [48, 96]}, may_change=["steps"])
    with pytest.raises(ValueError, match=r"holds a run with other settings \(lr, seed, widths differ\)"):
        check_run_settings(tmp_path / "run", {"lr": 5e-4, "steps": 100, "widths": [64, 96], "seed": 1})


def test_the_shapes_trainer_refuses_a_folder_of_another_run_before_touching_it(tmp_path):
    record_run_settings(tmp_path, {"learning_rate": 1.0})
    (tmp_path / "unet.ckpt").write_bytes(b"progress")
    before = (tmp_path / RUN_SETTINGS).read_text()
    command = [sys.executable, str(ROOT / "trainers" / "train_shapes_diffusion.py"), "--output_dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--output_dir {tmp_path} holds a run with other settings (" in result.stderr
    assert "learning_rate" in result.stderr.splitlines()[-1]
    assert (tmp_path / RUN_SETTINGS).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUN_SETTINGS, "unet.ckpt"]
    assert json.loads(before) == {"learning_rate": 1.0}


def test_a_checkpoint_missing_its_state_file_is_passed_over(tmp_path):
    """A run killed while writing checkpoint-4 resumes from checkpoint-2, the newest written whole."""
    assert last_complete_checkpoint(tmp_path / "absent") is None
    for step in (2, 4, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"weights")
    for step in (2, 10):
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    (tmp_path / "checkpoint-10" / "trainer_state.json").unlink()  # the newest was cut short
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")


@pytest.mark.parametrize("content", ["null", "[1, 2]", "{not json", ""])
def test_a_damaged_record_is_named_not_a_traceback(content, tmp_path):
    (tmp_path / RUN_SETTINGS).write_text(content)
    (tmp_path / "checkpoint-1").mkdir()
    with pytest.raises(ValueError, match=f"--output_dir {tmp_path}: its {RUN_SETTINGS} is damaged"):
        check_run_settings(tmp_path, {"lr": 1e-3})


def test_the_shapes_trainer_never_exports_into_a_folder_of_another_kind(tmp_path):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "generation_config.json").write_text("{}")
    command = [
        sys.executable,
        str(ROOT / "trainers" / "train_shapes_diffusion.py"),
        "--output_dir",
        str(tmp_path / "run"),
    ]
    result = subprocess.run([*command, "--export_dir", str(dataset)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"train_shapes_diffusion.py: error: --export_dir {dataset} holds a free-atm dataset "
        "(generation_config.json) and no model_index.json; use an empty or new folder"
    )
    assert not (tmp_path / "run").exists() and [p.name for p in dataset.iterdir()] == ["generation_config.json"]
