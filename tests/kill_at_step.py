"""Run ``trainers/train_contrastive.py`` with its arguments and SIGKILL the process right after it saves
the checkpoint of step ``$KILL_AT_STEP``: a crash at a known point, for the resume tests."""

import os
import runpy
import signal
import sys
from pathlib import Path

from transformers import TrainerCallback

import free_atm.training

KILL_AT = int(os.environ["KILL_AT_STEP"])


class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)


def with_kill(build):
    def build_and_arm(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.add_callback(KillAfterSave())
        return trainer

    return build_and_arm


free_atm.training.contrastive_trainer = with_kill(free_atm.training.contrastive_trainer)
script = Path(__file__).resolve().parent.parent / "trainers" / "train_contrastive.py"
sys.argv = [str(script), *sys.argv[1:]]
runpy.run_path(str(script), run_name="__main__")
