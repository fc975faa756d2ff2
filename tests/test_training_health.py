"""A run whose loss or weights stop being finite ends with one line naming the step and saves nothing from
them: the last checkpoint on disk is the last finite one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from free_atm.training.health import FiniteWatch, TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]


def test_the_watch_names_the_first_non_finite_step_and_non_finite_weights():
    watch, weights = FiniteWatch(), [torch.ones(3)]
    watch.check(weights, 0, "nothing seen")  # nothing observed yet
    for step, loss in enumerate([torch.tensor(0.5), torch.tensor([1.0, 2.0])], start=1):
        watch.observe(loss, step)
    watch.check(weights, 2, "finite")
    watch.observe(torch.tensor([1.0, float("nan")]), 3)
    watch.observe(torch.tensor(float("inf")), 4)
    watch.observe(torch.tensor(0.1), 5)  # a finite loss later does not hide the first bad one
    with pytest.raises(TrainingDiverged, match="the loss is not finite at step 3; lower it"):
        watch.check(weights, 5, "lower it")
    fresh = FiniteWatch()
    fresh.observe(torch.tensor(0.2), 1)
    with pytest.raises(TrainingDiverged, match="the weights are not finite after step 1; see"):
        fresh.check([torch.ones(2), torch.tensor([0.0, float("-inf")])], 1, "see")
    assert issubclass(TrainingDiverged, ValueError)  # reported in one line, exit status 2


def test_a_diverging_trainer_run_stops_naming_the_step_and_keeps_its_last_finite_checkpoint(tmp_path):
    """A learning rate that is finite but absurd: step 1's update leaves weights of about 1e30 (finite,
    checkpointed), step 2's forward pass overflows. The run ends with one line; checkpoint-1 stays, no
    later checkpoint and no model are written."""
    arguments = [
        *("--dataset_name", "shapes:8", "--image_size", "32", "--backbone_depths", "1", "1"),
        *("--backbone_widths", "8", "16", "--projection_dim", "8", "--hidden_dim", "16"),
        *("--per_device_train_batch_size", "4", "--use_cpu", "--report_to", "none", "--max_steps", "4"),
        *("--learning_rate", "1e30", "--save_strategy", "steps", "--save_steps", "1", "--logging_steps", "10"),
        *("--output_dir", str(tmp_path)),
    ]
    command = [sys.executable, str(ROOT / "trainers" / "train_contrastive.py"), *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "train_contrastive.py: error: training diverged: the loss is not finite at step 2; the last checkpoint, "
        f"{tmp_path}/checkpoint-1, was written before it; lower --learning_rate and start again in a new "
        "--output_dir"
    )
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1"]
    assert not (tmp_path / "model.safetensors").exists()
    weights = load_file(tmp_path / "checkpoint-1" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert max(float(w.abs().max()) for w in weights.values()) > 1e29  # the absurd step was taken
