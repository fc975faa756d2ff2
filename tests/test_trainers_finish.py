"""Every training script ends cleanly on the shortest run a user can ask for: one step, fewer than the
logging interval (nothing logged in between), no checkpoint; the model, its card and what the script
exports are written."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch
from transformers import ResNetConfig, ResNetModel

ROOT = Path(__file__).resolve().parents[1]
SHORT = ("--max_steps", "1", "--logging_steps", "10", "--save_strategy", "no", "--report_to", "none", "--use_cpu")
TINY_VIT = "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64,decoder_hidden_size=16,"
TINY_VIT += "decoder_num_hidden_layers=1,decoder_num_attention_heads=2,decoder_intermediate_size=32"

RUNS = {
    "train_contrastive.py": (
        ["--dataset_name", "shapes:8", "--image_size", "32", "--backbone_depths", "1", "1", "--backbone_widths"]
        + ["8", "16", "--projection_dim", "8", "--hidden_dim", "16", "--per_device_train_batch_size", "4"]
        + ["--probe_scenes", "8"],
        ["model.safetensors", "backbone/config.json", "README.md"],
    ),
    "train_mae.py": (
        ["--dataset_name", "shapes:8", "--image_size", "32", "--config_overrides", TINY_VIT]
        + ["--per_device_train_batch_size", "4", "--probe_scenes", "8"],
        ["model.safetensors", "encoder/config.json", "README.md"],
    ),
    "train_blip.py": (
        ["--dataset_name", "shapes:8", "--image_size", "32", "--hidden_size", "32", "--num_layers", "1"]
        + ["--num_heads", "2", "--vocab_size", "100", "--per_device_train_batch_size", "4"],
        ["model.safetensors", "retrieval/config.json", "captioning/config.json", "README.md"],
    ),
    "train_diffusion_probe.py": (
        ["--dataset_name", "shapes:8", "--per_device_train_batch_size", "4"],
        ["model.safetensors", "README.md"],
    ),
    "finetune_segmentation.py": (
        [
            "--backbone",
            "{backbone}",
            "--train_scenes",
            "8",
            "--test_scenes",
            "4",
            "--per_device_train_batch_size",
            "4",
        ],
        ["model.safetensors", "eval_results.json"],
    ),
}


@pytest.mark.parametrize("script", list(RUNS))
def test_one_step_run_ends_cleanly_with_its_outputs(script, tmp_path, monkeypatch):
    torch.manual_seed(0)
    backbone = tmp_path / "backbone"
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])).save_pretrained(backbone)
    arguments, outputs = RUNS[script]
    out = tmp_path / "run"
    argv = [script, *(a.replace("{backbone}", str(backbone)) for a in arguments), *SHORT, "--output_dir", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "trainers" / script), run_name="__main__")
    assert [name for name in outputs if not (out / name).is_file()] == []
