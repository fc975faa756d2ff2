"""The settings a run started with (a training run, or a dataset's generation), kept in its output folder,
so that rerunning a command resumes only the same run.

Pitfall: a folder's checkpoints carry no recipe. Resuming them with another learning rate, dataset or
architecture silently mixes two runs into weights that no command reproduces, so a rerun with other
settings is refused, naming what differs; settings that only say how long or how often (steps, minutes,
evaluation) may change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

RUN_SETTINGS = "free_atm_run.json"


def check_run_settings(
    output_dir: str | Path,
    settings: dict,
    may_change: Iterable[str] = (),
    record: str = RUN_SETTINGS,
    option: str = "--output_dir",
    holds: str = "a run",
) -> None:
    """Raise ``ValueError`` if ``output_dir`` holds a run whose settings (in its ``record`` file) differ from
    ``settings`` in a key outside ``may_change``; the message names the keys, the folder's ``option`` and
    what it ``holds``. A key absent on one side counts as ``None`` (settings added later keep old runs
    resumable at their defaults)."""
    recorded = Path(output_dir) / record
    if not recorded.is_file():
        return
    wanted, before, free = json.loads(json.dumps(settings)), json.loads(recorded.read_text()), set(may_change)
    changed = sorted(k for k in before.keys() | wanted.keys() if k not in free and before.get(k) != wanted.get(k))
    if changed:
        raise ValueError(
            f"{option} {output_dir} holds {holds} with other settings ({', '.join(changed)} differ); "
            f"rerun with the same settings to resume, or choose another {option}"
        )


def record_run_settings(output_dir: str | Path, settings: dict, record: str = RUN_SETTINGS) -> None:
    """Write ``settings`` into ``output_dir`` (created if needed) for :func:`check_run_settings`."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / record).write_text(json.dumps(settings, indent=2))


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir`` that was written whole, or ``None``.

    Pitfall: a run killed while a checkpoint is being written leaves its folder without
    ``trainer_state.json`` (the Trainer writes it after the weights and the optimiser); resuming from it
    fails on every rerun, although the previous checkpoint is complete, so such folders are passed over.
    """
    out = Path(output_dir)
    if not out.is_dir():
        return None
    numbered = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    for checkpoint in sorted(numbered, key=lambda p: int(p.name.split("-", 1)[1]), reverse=True):
        if (checkpoint / "trainer_state.json").is_file():
            return str(checkpoint)
    return None


def resume_point(output_dir: str | Path, settings: dict, resume_from_checkpoint: str | None = None) -> str | None:
    """The checkpoint a training script goes on from: ``resume_from_checkpoint``, else the last one in
    ``output_dir`` (a killed run resumes by rerunning its command). A folder holding a run with other
    settings is refused; the settings are recorded, by the main process, for the next rerun."""
    from accelerate import PartialState

    out = Path(output_dir)
    check_run_settings(out, settings)
    checkpoint = resume_from_checkpoint or last_complete_checkpoint(out)
    if PartialState().is_main_process:
        record_run_settings(out, settings)
    return checkpoint
