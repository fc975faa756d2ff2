"""Downstream segmentation fine-tuning: our ResNet and ViT backbones load into UperNet, training lowers
the loss, mean IoU against a hand count, the script's output, and errors."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoModel,
    BertConfig,
    BertModel,
    ResNetConfig,
    TrainingArguments,
    ViTMAEConfig,
    ViTMAEForPreTraining,
)

from free_atm.finetuning import (
    SEGMENTATION_CLASSES,
    finetune_segmentation,
    mean_iou,
    segmentation_model,
    shapes_segmentation_dataset,
)
from free_atm.seeds import derive_seed
from free_atm.training import InstanceContrastiveConfig, InstanceContrastiveModel
from free_atm.training.mae.encoder import vit_encoder
from free_atm.world.render import render_scene

SCRIPT = Path(__file__).parents[1] / "trainers" / "finetune_segmentation.py"


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> dict[str, Path]:
    """Pretraining outputs as our trainers leave them: ``backbone/`` (contrastive ResNet), ``encoder/`` (MAE)."""
    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    resnet = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1])
    InstanceContrastiveModel(InstanceContrastiveConfig(resnet)).backbone.save_pretrained(root / "simclr" / "backbone")
    mae = ViTMAEConfig(
        image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    vit_encoder(ViTMAEForPreTraining(mae)).save_pretrained(root / "mae" / "encoder")
    return {"resnet": root / "simclr", "vit": root / "mae"}


def test_labels_are_the_visible_kinds_of_the_rendered_scene():
    data = shapes_segmentation_dataset(3, seed=4)
    for i in range(3):
        scene = render_scene(derive_seed(4, i))
        np.testing.assert_allclose(data[i]["pixel_values"].numpy(), scene.image.transpose(2, 0, 1) / 255.0)
        expected = np.zeros((64, 64), np.int64)
        for mask, kind in zip(scene.masks, scene.shapes):
            expected[mask] = SEGMENTATION_CLASSES.index(kind)
        np.testing.assert_array_equal(data[i]["labels"].numpy(), expected)


def test_mean_iou_against_a_hand_count():
    # truth rows, predicted columns; class 2 never occurs on either side
    confusion = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    overall, per_class = mean_iou(confusion)
    assert per_class[0] == pytest.approx(5 / (5 + 1 + 2)) and per_class[1] == pytest.approx(3 / (3 + 2 + 1))
    assert per_class[2] is None and overall == pytest.approx((5 / 8 + 3 / 6) / 2)


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_pretrained_weights_load_into_the_segmentation_model(kind, backbones):
    sub = "backbone" if kind == "resnet" else "encoder"
    reference = AutoModel.from_pretrained(backbones[kind] / sub).state_dict()
    model = segmentation_model(backbones[kind], len(SEGMENTATION_CLASSES))
    inner = model.backbone if kind == "resnet" else model.vit
    for name, value in inner.state_dict().items():
        torch.testing.assert_close(value, reference[name], msg=f"{name} not loaded")
    logits = model(pixel_values=torch.rand(2, 3, 64, 64)).logits
    assert logits.shape == (2, len(SEGMENTATION_CLASSES), 64, 64)


def test_fine_tuning_lowers_the_loss(backbones, tmp_path):
    train = shapes_segmentation_dataset(32, seed=10)
    test = shapes_segmentation_dataset(8, seed=11)
    batch = train[:16]
    torch.manual_seed(0)  # the head's initialisation, as finetune_segmentation draws it
    before = segmentation_model(backbones["vit"], len(SEGMENTATION_CLASSES))
    before = before(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss.item()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=30,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        logging_steps=10,
        report_to=[],
        save_strategy="no",
        seed=0,
        use_cpu=True,
    )
    result = finetune_segmentation(backbones["vit"], train, test, args)
    after = result.model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss.item()
    assert after < 0.7 * before and result.losses[-1] < result.losses[0]
    assert 0 < result.mean_iou <= 1 and result.class_iou["background"] > 0.5


def test_other_backbones_are_refused_by_name(tmp_path):
    bert = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    BertModel(bert).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="ResNet or ViT backbone; .* holds a 'bert' model"):
        segmentation_model(tmp_path, 6)


def test_script_writes_the_model_and_its_scores(backbones, tmp_path, monkeypatch, capsys):
    out = tmp_path / "seg"
    argv = ["finetune_segmentation.py", "--backbone", str(backbones["resnet"]), "--output_dir", str(out)]
    argv += ["--train_scenes", "16", "--test_scenes", "4", "--max_steps", "2", "--per_device_train_batch_size", "8"]
    argv += ["--report_to", "none", "--save_strategy", "no", "--use_cpu"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    scores = json.loads((out / "eval_results.json").read_text())
    assert set(scores["class_iou"]) == set(SEGMENTATION_CLASSES)
    present = [v for v in scores["class_iou"].values() if v is not None]
    assert scores["mean_iou"] == pytest.approx(sum(present) / len(present))
    assert f"mean_iou={scores['mean_iou']:.4f}" in capsys.readouterr().out
    assert (out / "config.json").is_file()

    monkeypatch.setattr(sys, "argv", [*argv[:5], "--train_scenes", "0"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert stop.value.code == 2
    assert "--train_scenes must be positive, got 0" in capsys.readouterr().err
