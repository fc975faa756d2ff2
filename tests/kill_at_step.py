"""Run a training script (the first argument) with the other arguments and SIGKILL the process right
after its Trainer saves the checkpoint of step ``$KILL_AT_STEP``: a crash at a known point, for the
resume tests."""

import os
import runpy
import signal
import sys

from transformers import Trainer, TrainerCallback

KILL_AT = int(os.environ["KILL_AT_STEP"])


class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)


def armed(init):
    def init_and_arm(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_callback(KillAfterSave())

    return init_and_arm


Trainer.__init__ = armed(Trainer.__init__)
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
