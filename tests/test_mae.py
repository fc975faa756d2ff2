"""Attention-guided MAE: the masking noise against NumPy, its schedule and statistics, the exported
encoder, the training script on one and two processes, and training that lowers the loss."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from training_runs import ROOT, assert_killed_run_resumes_to_the_uninterrupted_result, run_two_processes
from transformers import AutoImageProcessor, AutoModel, ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel

from free_atm.training import MaskConsistentViews
from free_atm.training.mae import (
    guided_noise,
    guided_ratio_at,
    num_masked_patches,
    patch_scores,
    vit_encoder,
)
from free_atm.world import render_scene

TINY_VIT = (
    "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,"
    "decoder_hidden_size=16,decoder_num_hidden_layers=1,decoder_num_attention_heads=2,decoder_intermediate_size=32"
)


def tiny_mae(image_size: int = 32, mask_ratio: float = 0.75) -> ViTMAEForPreTraining:
    torch.manual_seed(0)
    config = ViTMAEConfig(image_size=image_size, patch_size=8, mask_ratio=mask_ratio)
    config.update_from_string(TINY_VIT)
    return ViTMAEForPreTraining(config).eval()


def test_patch_scores_are_the_patch_means_combined_by_their_maximum():
    rng = np.random.default_rng(0)
    maps = rng.random((2, 3, 32, 32)).astype(np.float32)
    valid = np.array([[True, True, False], [True, False, False]])
    scores = patch_scores(torch.from_numpy(maps), torch.from_numpy(valid), patch_size=8)
    expected = np.zeros((2, 16), np.float32)
    for b in range(2):
        for row in range(4):
            for column in range(4):
                means = [maps[b, m, 8 * row : 8 * row + 8, 8 * column : 8 * column + 8].mean() for m in range(3)]
                expected[b, 4 * row + column] = max(means[m] for m in range(3) if valid[b, m])
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("guided_ratio", [0.0, 0.5, 0.8, 1.0])
def test_noise_masks_the_top_scored_patches_and_a_random_rest_as_vitmae_reads_it(guided_ratio):
    model = tiny_mae()
    rng = np.random.default_rng(1)
    scores = np.stack([rng.permutation(16) / 16 for _ in range(64)]).astype(np.float32)  # distinct scores
    noise = guided_noise(torch.from_numpy(scores), 0.75, guided_ratio, torch.Generator().manual_seed(0))
    with torch.no_grad():
        mask = model(pixel_values=torch.rand(64, 3, 32, 32), noise=noise).mask.numpy().astype(bool)
    masked, guided = num_masked_patches(16, 0.75), round(guided_ratio * 12)
    assert masked == 12
    assert (mask.sum(1) == masked).all()
    top = np.argsort(-scores, axis=1)[:, :guided]
    assert np.take_along_axis(mask, top, 1).all()  # every top-scored patch is masked
    if guided < masked:
        # the rest is random: every other patch is masked in some rows and kept in others
        rest = np.ones_like(mask)
        np.put_along_axis(rest, top, False, 1)
        by_rank = np.take_along_axis(mask, np.argsort(-scores, axis=1), 1)[:, guided:]
        rate = by_rank.mean(0)
        expected = (masked - guided) / (16 - guided)
        assert np.abs(rate - expected).max() < 0.25, rate
        assert (by_rank.mean(0) > 0).all() and (by_rank.mean(0) < 1).all()


def test_ties_at_the_boundary_are_broken_at_random():
    scores = torch.zeros(4000, 16)
    scores[:, :10] = 1.0  # ten patches share the top score; 6 of the 12 masked are guided
    noise = guided_noise(scores, 0.75, 0.5, torch.Generator().manual_seed(0))
    chosen = noise >= 1.0
    assert (chosen.sum(1) == 6).all() and not chosen[:, 10:].any()
    torch.testing.assert_close(chosen[:, :10].float().mean(0), torch.full((10,), 0.6), atol=0.03, rtol=0)


def scene_batch(count: int = 200):
    scenes = [render_scene(seed) for seed in range(count)]
    maps = torch.zeros(count, 3, 64, 64)
    for i, scene in enumerate(scenes):
        maps[i, : len(scene.objects)] = torch.from_numpy(scene.masks.astype(np.float32))
    return maps, maps.sum((-2, -1)) > 0


def test_random_masking_hits_objects_at_the_rate_of_their_area_and_guided_masking_seeks_them():
    maps, valid = scene_batch()
    scores = patch_scores(maps, valid, patch_size=8)
    inside = scores >= 0.5
    masked_share = {}
    for ratio in (0.0, 0.8):
        noise = guided_noise(scores, 0.75, ratio, torch.Generator().manual_seed(0))
        masked = noise.argsort(1).argsort(1) >= 64 - num_masked_patches(64, 0.75)  # ViTMAE keeps the lowest
        masked_share[ratio] = float((masked & inside).sum() / masked.sum())
    area = float(inside.float().mean())
    assert abs(masked_share[0.0] - area) < 0.01, (masked_share, area)
    # with beta 0.8, 38 of 48 masked patches go to objects first: every object patch when they fit
    expected = float(torch.minimum(inside.sum(1), torch.tensor(38)).sum() / (48 * len(scores)))
    assert masked_share[0.8] == pytest.approx(expected) and masked_share[0.8] > area + 0.03


def test_schedule_rises_linearly_to_the_ceiling():
    assert [guided_ratio_at(p) for p in (0.0, 0.5, 1.0)] == [0.0, 0.4, 0.8]
    assert guided_ratio_at(0.25, 0.6, "constant") == 0.6
    with pytest.raises(ValueError, match="must be one of linear, constant, got 'cosine'"):
        guided_ratio_at(0.5, 0.8, "cosine")
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\], got 1.5"):
        guided_noise(torch.zeros(1, 4), 0.75, 1.5)


def test_one_view_moves_maps_with_the_image_and_changes_no_colour():
    views = MaskConsistentViews(32, scale=(0.2, 1.0), color_strength=0.0, grayscale=0.0, blur=0.0)
    assert len(views.photometric) == 0
    torch.manual_seed(0)
    maps = (torch.rand(8, 1, 32, 32) > 0.5).float()
    pixels = torch.cat([maps, torch.rand(8, 2, 32, 32)], 1)  # the first channel is the map
    view = views.single(pixels, maps, torch.ones(8, 1, dtype=torch.bool))
    torch.testing.assert_close(view.pixel_values[:, :1], view.object_maps)
    assert not torch.allclose(view.object_maps, maps)  # the crops moved them


def test_exported_encoder_is_a_vit_that_never_masks_and_matches_the_mae_encoder(tmp_path):
    model = tiny_mae()
    encoder = vit_encoder(model)
    encoder.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "ViTModel"
    pixels = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        first, second = loaded(pixels), loaded(pixels)
        # the MAE encoder with nothing masked and the patches in order (noise rising along the sequence)
        config = ViTMAEConfig.from_dict({**model.config.to_dict(), "mask_ratio": 0.0})
        unmasked = ViTMAEModel(config).eval()
        unmasked.load_state_dict(model.vit.state_dict())
        reference = unmasked(pixels, noise=torch.arange(16.0).expand(3, -1)).last_hidden_state
    torch.testing.assert_close(first.last_hidden_state, second.last_hidden_state)
    torch.testing.assert_close(first.pooler_output, second.pooler_output)
    torch.testing.assert_close(first.last_hidden_state, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(first.pooler_output, reference[:, 0].tanh(), rtol=1e-5, atol=1e-5)


TINY_RUN = (
    *("--dataset_name", "shapes:24", "--image_size", "32", "--config_overrides", TINY_VIT),
    *("--per_device_train_batch_size", "4", "--use_cpu", "--report_to", "none", "--logging_steps", "1"),
)


def test_training_script_on_two_processes_writes_model_encoder_reconstructions_and_card(tmp_path, capsys):
    from free_atm.cli import main

    result = run_two_processes(
        ROOT / "trainers" / "train_mae.py",
        *TINY_RUN,
        *("--max_steps", "3", "--save_strategy", "no", "--probe_scenes", "16", "--output_dir", str(tmp_path)),
    )
    assert "'guided_ratio': '0.5333'" in result.stdout + result.stderr  # beta after 2 of 3 steps: 0.8 x 2/3
    assert type(AutoModel.from_pretrained(tmp_path)).__name__ == "ViTMAEModel"
    encoder = AutoModel.from_pretrained(tmp_path / "encoder")
    assert type(encoder).__name__ == "ViTModel"
    processor = AutoImageProcessor.from_pretrained(tmp_path / "encoder")
    assert processor.size == {"height": 32, "width": 32} and not processor.do_normalize
    card = (tmp_path / "README.md").read_text()
    assert "attention-guided: beta linear up to 0.8" in card and "reconstruction.png" in card
    # two processes of 4 images: the learning rate is scaled from the base by the global batch of 8
    assert "| learning rate | 3.125e-05 |" in card
    results = json.loads((tmp_path / "mae_results.json").read_text())
    assert {
        "knn_accuracy (shapes world)",
        "cls_knn_accuracy (shapes world)",
        "mean_linear_accuracy (shapes world)",
    } <= set(results)
    picture = __import__("PIL.Image").Image.open(tmp_path / "reconstruction.png")
    assert picture.width == 4 * 128 + 3 * 4 and picture.height > 6 * 128  # four columns of six images
    # free-atm probe takes the whole MAE folder (whose encoder would mask) or encoder/, at the model's size
    main(["probe", str(tmp_path), "--scenes", "16", "--pooling", "cls"])
    whole = json.loads(capsys.readouterr().out)
    main(["probe", str(tmp_path / "encoder"), "--scenes", "16", "--pooling", "cls"])
    assert json.loads(capsys.readouterr().out)["knn_accuracy"] == whole["knn_accuracy"]


def test_a_few_hundred_steps_lower_the_random_masking_loss(tmp_path):
    from free_atm.training.mae import MAEDataArguments, MAEModelArguments, MAETrainingArguments, mae_trainer

    training_args = MAETrainingArguments(
        output_dir=str(tmp_path),
        max_steps=300,
        per_device_train_batch_size=32,
        base_learning_rate=1.2e-2,  # 1.5e-3 at batch 32
        warmup_steps=20,
        weight_decay=0.05,
        logging_steps=50,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        eval_strategy="no",
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
    )
    # pixel targets: per-patch normalised ones (the default) need far more than a test's steps on 32 px scenes
    model_args = MAEModelArguments(config_overrides=TINY_VIT, norm_pix_loss=False)
    data_args = MAEDataArguments(dataset_name="shapes:600", image_size=32, train_val_split=0.1)
    trainer = mae_trainer(model_args, data_args, training_args)
    before = trainer.evaluate()["eval_loss"]
    assert trainer.evaluate()["eval_loss"] == before  # evaluation masks with a generator seeded afresh
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < 0.5 * before, (before, after)
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert [log["guided_ratio"] for log in logs][-1] == pytest.approx(0.8 * logs[-1]["step"] / 300, abs=1e-3)
    # as beta rises, more of the masked patches fall inside objects than their area
    assert logs[-1]["masked_in_objects"] > logs[-1]["object_area"] + 0.05, logs[-1]


def test_killed_mae_training_resumes_to_the_uninterrupted_result(tmp_path):
    arguments = [*TINY_RUN, "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2"]
    assert_killed_run_resumes_to_the_uninterrupted_result(ROOT / "trainers" / "train_mae.py", arguments, tmp_path)


def test_model_name_or_path_starts_from_a_checkpoint_with_this_runs_masking(tmp_path):
    from free_atm.training.mae import MAEModelArguments

    tiny_mae().save_pretrained(tmp_path)
    model = MAEModelArguments(model_name_or_path=str(tmp_path), mask_ratio=0.5, norm_pix_loss=False).model(32)
    assert model.config.mask_ratio == 0.5 and not model.config.norm_pix_loss
    torch.testing.assert_close(model.vit.embeddings.cls_token, tiny_mae().vit.embeddings.cls_token)
    with pytest.raises(ValueError, match="takes 32-pixel images, not --image_size 64"):
        MAEModelArguments(model_name_or_path=str(tmp_path)).model(64)


def test_push_to_hub_uploads_model_encoder_reconstructions_and_card(tmp_path, monkeypatch):
    from hub_fake import fake_hub

    monkeypatch.syspath_prepend(str(ROOT / "trainers"))
    from train_mae import main

    hub_args = ["--push_to_hub", "--hub_model_id", "me/mae-guided", "--save_strategy", "no"]
    argv = ["train_mae.py", *TINY_RUN, "--max_steps", "2", "--output_dir", str(tmp_path), *hub_args]
    monkeypatch.setattr(sys, "argv", argv)
    with fake_hub(monkeypatch) as hub:
        main()
    assert {"name": "mae-guided", "organization": "me"}.items() <= hub.created[0].items()
    expected = {"README.md", "config.json", "model.safetensors", "reconstruction.png", "encoder/config.json"}
    assert expected | {"encoder/model.safetensors", "encoder/preprocessor_config.json"} <= set(hub.uploaded)
    assert 'subfolder="encoder"' in hub.uploaded["README.md"].decode()
