"""Run ``trainers/train_shapes_diffusion.py`` with its arguments and end it at a known point, for the resume
tests: ``KILL_AT_STEP=N`` SIGKILLs the process right after the UNet checkpoint of step N is in place (a
crash); ``SIGNAL_IN_STEP=N`` sends it ``SIGNAL`` (``TERM`` or ``INT``) in the middle of UNet step N, while its
gradients are clipped (a stop asked for between checkpoints)."""

import os
import runpy
import signal
import sys
from pathlib import Path

import torch

save, replace, clip = torch.save, Path.replace, torch.nn.utils.clip_grad_norm_
saved_step = {}
clipped = [0]


def recording_save(obj, path, *args, **kwargs):
    save(obj, path, *args, **kwargs)
    if isinstance(obj, dict) and "step" in obj:
        saved_step[Path(path).stem] = obj["step"]


def killing_replace(self, target):
    result = replace(self, target)
    if Path(target).name == "unet.ckpt" and saved_step.get("unet", 0) >= int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return result


def signalling_clip(*args, **kwargs):  # the UNet stage clips once a step; the VAE stage never does
    clipped[0] += 1
    if clipped[0] == int(os.environ["SIGNAL_IN_STEP"]):
        os.kill(os.getpid(), getattr(signal, "SIG" + os.environ["SIGNAL"]))
    return clip(*args, **kwargs)


torch.save = recording_save
if "KILL_AT_STEP" in os.environ:
    Path.replace = killing_replace
if "SIGNAL_IN_STEP" in os.environ:
    torch.nn.utils.clip_grad_norm_ = signalling_clip
script = Path(__file__).resolve().parent.parent / "trainers" / "train_shapes_diffusion.py"
sys.argv = [str(script), *sys.argv[1:]]
runpy.run_path(str(script), run_name="__main__")
