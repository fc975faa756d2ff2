"""Train the shapes world's judge (the shape-kind classifier of :mod:`free_atm.evaluation.judge`) and save it
where the package ships it.

    python trainers/train_shape_judge.py [--out free_atm/evaluation/judge.safetensors]

Prints the judge's per-object accuracy on rendered scenes it was not trained on.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import save_file

from free_atm.evaluation.fidelity import fidelity_breakdown, scenes_split
from free_atm.evaluation.judge import JUDGE_WEIGHTS, train_shape_classifier
from free_atm.usage import run_reporting_bad_input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(resources.files("free_atm.evaluation") / JUDGE_WEIGHTS))
    parser.add_argument("--num-scenes", type=int, default=6000)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    for name in ("num_scenes", "steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not Path(args.out).parent.is_dir():
        raise ValueError(f"--out {args.out}: the folder {Path(args.out).parent} does not exist")
    torch.set_num_threads(1)  # the same run on any machine
    judge = train_shape_classifier(args.num_scenes, args.steps)
    save_file(judge.state_dict(), args.out)
    check = scenes_split(9_000, 500)
    print(json.dumps(fidelity_breakdown([s.image for s in check], check, judge)))


if __name__ == "__main__":
    run_reporting_bad_input(main, "train_shape_judge.py")
