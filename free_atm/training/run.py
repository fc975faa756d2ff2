"""One training run in its ``--output_dir``: the folder held by one launch at a time, of the right kind, and
resumed only with the settings it started with.

Pitfall: the script's own dataclass is not the whole recipe. The learning rate, seed, batch and schedule
live in ``TrainingArguments``; a rerun that changed them would resume the checkpoints into weights that no
command reproduces, so they are recorded and compared with the script's settings. The schedule's length
(``max_steps``, ``num_train_epochs``) is part of it: a decaying learning rate depends on it at every step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from accelerate import PartialState
from transformers import TrainingArguments

from ..data.lock import writer_lock
from ..run_settings import (
    RUN_SETTINGS,
    check_folder_kind,
    check_run_settings,
    last_complete_checkpoint,
    record_run_settings,
)

#: the ``TrainingArguments`` that change what a run computes, recorded beside the script's own settings
TRAINING_SETTINGS = (
    "learning_rate",
    "seed",
    "data_seed",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "optim",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_steps",
    "max_steps",
    "num_train_epochs",
)


def run_settings(training_args: TrainingArguments, settings: dict) -> dict:
    """``settings`` (the script's own) with the training settings of :data:`TRAINING_SETTINGS` and the
    number of processes (the global batch is the per-device batch times it)."""
    training = {name: getattr(training_args, name, None) for name in TRAINING_SETTINGS}
    return {**settings, **training, "processes": training_args.world_size}


@contextmanager
def training_run(training_args: TrainingArguments, settings: dict) -> Iterator[str | None]:
    """Hold ``training_args.output_dir`` for the block and yield the checkpoint the run goes on from
    (``--resume_from_checkpoint``, else the last complete one in the folder, else ``None``).

    Before anything is written: the folder must be new, empty or a run of the same settings
    (:func:`free_atm.run_settings.check_folder_kind`, :func:`free_atm.run_settings.check_run_settings`), and
    no other launch may be writing it (the main process holds its lock until the block ends; another
    launch's main process is refused, and its launcher stops its other processes). The settings are then
    recorded for the next rerun; a run that fails before writing anything else takes them back (and the
    folder, if it made it)."""
    out = Path(training_args.output_dir)
    state = PartialState()
    with writer_lock(out, "training run", "--output_dir") if state.is_main_process else nullcontext():
        check_folder_kind(out, RUN_SETTINGS, "--output_dir")
        recorded = run_settings(training_args, settings)
        check_run_settings(out, recorded)
        checkpoint = training_args.resume_from_checkpoint or last_complete_checkpoint(out)
        created = not out.exists()
        if state.is_main_process:
            record_run_settings(out, recorded)
        try:
            yield checkpoint
        except BaseException:
            if state.is_main_process and {p.name for p in out.iterdir()} == {RUN_SETTINGS}:
                # the run failed before writing anything: leave no folder that looks like a run
                (out / RUN_SETTINGS).unlink()
                if created:
                    out.rmdir()
            raise
