"""Turn a candidate of the shapes model's long run into a model folder ready to be judged and shipped.

A candidate (``--candidate_dir`` of ``trainers/train_shapes_diffusion.py``) is saved in float16 to stay small
in git; the shipped model is float32, and the long run trains its UNet and text encoder, never its VAE.
This writes ``--out``: the shipped model's folder (VAE, tokenizer, scheduler, saved settings, card) with
the candidate's UNet and text encoder in float32 and the candidate's ``training_args.json``. Judge it, and
let the benchmark choose and save its sampling and capture settings:

    python trainers/promote_shapes_candidate.py --candidate free_atm/models/shapes/long_run --out ../runs/candidate
    python benchmarks/mask_quality.py --model ../runs/candidate --num-images 384 --choose-sampling --save-defaults

When it beats the shipped model on the held-out split, copy ``--out`` over
``free_atm/models/shapes/default_model`` and redraw the pictures made from it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from free_atm.models.shapes.architecture import default_model_path
from free_atm.usage import run_reporting_bad_input

#: the largest difference between the candidate's float16 VAE and the shipped float32 one that is rounding
VAE_ROUNDING = 2e-3


def promote(candidate: Path, out: Path, shipped: Path) -> None:
    """Write ``out`` from ``shipped`` with ``candidate``'s UNet and text encoder in float32. Raises
    ``ValueError`` naming the folder when ``out`` exists or ``candidate`` is not a candidate of a run from
    ``shipped``'s VAE. The folder is written beside ``out`` and renamed into place, so an ``out`` that
    exists is whole."""
    if out.exists():
        raise ValueError(f"--out {out} exists; name a new folder")
    if not (candidate / "candidate.json").is_file():
        raise ValueError(f"--candidate {candidate} holds no candidate.json: not a candidate of the long run")
    vae = AutoencoderKL.from_pretrained(candidate, subfolder="vae").state_dict()
    reference = AutoencoderKL.from_pretrained(shipped, subfolder="vae").state_dict()
    difference = max((vae[name].float() - weight).abs().max().item() for name, weight in reference.items())
    if difference > VAE_ROUNDING:
        raise ValueError(
            f"--candidate {candidate}: its VAE differs from the shipped model's by {difference:.3g}, more than "
            "float16 rounding; it was not trained from the shipped VAE"
        )
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(shipped, partial, ignore=shutil.ignore_patterns("unet", "text_encoder"))
    UNet2DConditionModel.from_pretrained(candidate, subfolder="unet", torch_dtype=torch.float32).save_pretrained(
        partial / "unet"
    )
    CLIPTextModel.from_pretrained(candidate, subfolder="text_encoder", dtype=torch.float32).save_pretrained(
        partial / "text_encoder"
    )
    config = json.loads((partial / "unet" / "config.json").read_text())
    config.pop("_name_or_path", None)  # where this machine loaded it from: not part of the model
    (partial / "unet" / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(candidate / "training_args.json", partial / "training_args.json")
    partial.rename(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", required=True, help="a candidate folder of the long run")
    parser.add_argument("--out", required=True, help="a new folder for the model")
    parser.add_argument("--shipped", default=default_model_path(), help="the model it would replace")
    args = parser.parse_args()
    promote(Path(args.candidate), Path(args.out), Path(args.shipped))
    print(f"wrote {args.out}: judge it with benchmarks/mask_quality.py --model {args.out}")


if __name__ == "__main__":
    run_reporting_bad_input(main, "promote_shapes_candidate.py")
