"""Run ``trainers/train_shapes_diffusion.py`` with its arguments and SIGKILL the process right after the UNet
checkpoint of step ``$KILL_AT_STEP`` is in place: a crash at a known point, for the resume test."""

import os
import runpy
import signal
import sys
from pathlib import Path

import torch

KILL_AT = int(os.environ["KILL_AT_STEP"])
save, replace = torch.save, Path.replace
saved_step = {}


def recording_save(obj, path, *args, **kwargs):
    save(obj, path, *args, **kwargs)
    if isinstance(obj, dict) and "step" in obj:
        saved_step[Path(path).stem] = obj["step"]


def killing_replace(self, target):
    result = replace(self, target)
    if Path(target).name == "unet.ckpt" and saved_step.get("unet", 0) >= KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return result


torch.save, Path.replace = recording_save, killing_replace
script = Path(__file__).resolve().parent.parent / "trainers" / "train_shapes_diffusion.py"
sys.argv = [str(script), *sys.argv[1:]]
runpy.run_path(str(script), run_name="__main__")
