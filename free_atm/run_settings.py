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
#: the record a generated or annotated dataset keeps its settings in
DATASET_RECORD = "generation_config.json"
#: the record of ``free-atm export``
EXPORT_RECORD = "free_atm_export.json"
#: what a folder holds, told by the first of these files it has
FOLDER_KINDS = {
    DATASET_RECORD: "a free-atm dataset",
    EXPORT_RECORD: "an export of a free-atm dataset",
    RUN_SETTINGS: "a training run",
    "model_index.json": "a diffusers pipeline",
    "config.json": "a model",
    "dataset_info.json": "a dataset",
}


def folder_kind(root: Path) -> str:
    """What ``root`` holds, in words, for messages: ``"a free-atm dataset (generation_config.json)"``, ...,
    or ``"other files"``."""
    found = next((name for name in FOLDER_KINDS if (root / name).is_file()), None)
    return f"{FOLDER_KINDS[found]} ({found})" if found else "other files"


def check_folder_kind(root: str | Path, record: str, option: str) -> None:
    """Raise ``ValueError`` unless ``root`` is absent, an empty folder, or holds ``record`` (a run of the
    same kind, which a rerun resumes): a writer never puts its files into a dataset, a model or a folder of
    another kind, where they would replace that folder's card, weights or records."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{option} {root} is a file, not a folder; choose a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / record).is_file():
        raise ValueError(f"{option} {root} holds {folder_kind(root)} and no {record}; use an empty or new folder")


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
    resumable at their defaults). A folder holding its record and nothing else (a run that stopped before
    writing anything, such as one whose first step failed) has nothing to resume: any settings may start it
    over."""
    recorded = Path(output_dir) / record
    if not recorded.is_file() or {p.name for p in recorded.parent.iterdir()} == {record}:
        return
    try:
        before = json.loads(recorded.read_text())
    except (ValueError, UnicodeDecodeError):
        before = None
    if not isinstance(before, dict):
        raise ValueError(
            f"{option} {output_dir}: its {record} is damaged (not a JSON object of settings); restore it (a "
            f"dataset's card holds its settings), or choose another {option}"
        )
    wanted, free = json.loads(json.dumps(settings)), set(may_change)
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
