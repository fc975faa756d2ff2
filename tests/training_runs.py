"""Running training scripts in subprocesses, as users do: on two processes, and killed then resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_two_processes(script: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    result = subprocess.run([*command, *args], env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_killed_run_resumes_to_the_uninterrupted_result(
    script: Path,
    arguments: list[str],
    out: Path,
    steps: int = 6,
    kill_at: int = 4,
    weights_file: str = "model.safetensors",
) -> dict[str, dict[str, torch.Tensor]]:
    """Run ``script`` whole; run it again killed (SIGKILL) right after checkpoint ``kill_at``, and rerun
    the same command; assert that the rerun went on from the checkpoint to the same final step, losses
    and weights (``weights_file``). Returns both runs' final weights (``whole``, ``crash``)."""

    def run(program, folder, **extra):
        command = [sys.executable, *program, *arguments, "--output_dir", str(out / folder)]
        return subprocess.run(command, env={**ENV, **extra}, capture_output=True, text=True, timeout=300)

    whole = run([str(script)], "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = run([str(ROOT / "tests" / "kill_at_step.py"), str(script)], "crash", KILL_AT_STEP=str(kill_at))
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL, right after the checkpoint was written
    assert not (out / "crash" / weights_file).exists()
    resumed = run([str(script)], "crash")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # it went on from the checkpoint (a run from scratch would log every step's loss)
    assert (resumed.stdout + resumed.stderr).count("'loss'") == steps - kill_at, resumed.stdout[-3000:]

    states = [
        json.loads((out / r / f"checkpoint-{steps}" / "trainer_state.json").read_text()) for r in ("whole", "crash")
    ]
    assert states[0]["global_step"] == states[1]["global_step"] == steps
    # the steps after the crash saw the same batches, views and state: the same losses and weights
    losses = [[e["loss"] for e in s["log_history"] if "loss" in e] for s in states]
    assert losses[1][kill_at:] == pytest.approx(losses[0][kill_at:], rel=1e-4)
    weights = {r: load_file(out / r / weights_file) for r in ("whole", "crash")}
    assert weights["whole"].keys() == weights["crash"].keys()
    for name in weights["whole"]:
        torch.testing.assert_close(weights["crash"][name], weights["whole"][name], rtol=1e-4, atol=1e-5, msg=name)
    return weights
