"""Instance-level contrastive learning: loss, pooling, views, gathering, and training that learns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from training_runs import assert_killed_run_resumes_to_the_uninterrupted_result, run_two_processes
from transformers import AutoModel, ResNetConfig

from free_atm.training import (
    InstanceContrastiveConfig,
    InstanceContrastiveModel,
    MaskConsistentViews,
    attentive_pool,
    nt_xent,
)

ROOT = Path(__file__).resolve().parent.parent


def loop_nt_xent(z1, z2, temperature):
    """Eq. 3 written out: every object of either view against every other, positive in the other view."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n, total = len(z1), 0.0
    for i in range(2 * n):
        others = torch.stack([z[i] @ z[j] / temperature for j in range(2 * n) if j != i])
        total += torch.logsumexp(others, 0) - z[i] @ z[(i + n) % (2 * n)] / temperature
    return total / (2 * n)


def test_loss_equals_written_out_equation():
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    loss, metrics = nt_xent(z1, z2, torch.ones(5, dtype=torch.bool), 0.2)
    torch.testing.assert_close(loss, loop_nt_xent(z1, z2, 0.2))
    assert metrics["valid_objects"] == 5


def test_invalid_objects_contribute_nothing():
    torch.manual_seed(1)
    z1, z2 = torch.randn(6, 8, requires_grad=True), torch.randn(6, 8)
    valid = torch.tensor([1, 0, 1, 1, 0, 1]).bool()
    loss, metrics = nt_xent(z1, z2, valid, 0.2)
    torch.testing.assert_close(loss, loop_nt_xent(z1[valid], z2[valid], 0.2))
    loss.backward()
    assert z1.grad[~valid].abs().max() == 0 and metrics["valid_objects"] == 4
    changed = z1.detach().clone()
    changed[~valid] = 100.0
    torch.testing.assert_close(nt_xent(changed, z2, valid, 0.2)[0], loss.detach())


def test_attentive_pooling_is_eq_2():
    features = torch.randn(2, 3, 4, 4)
    maps = torch.zeros(2, 2, 4, 4)
    maps[0, 0, :2, :2] = 1.0
    maps[0, 1, 1, 3] = 0.5
    pooled = attentive_pool(features, maps)
    torch.testing.assert_close(pooled[0, 0], features[0, :, :2, :2].mean((-2, -1)))
    torch.testing.assert_close(pooled[0, 1], features[0, :, 1, 3])
    assert pooled[1].abs().max() == 0  # empty maps give zero vectors, not NaN


def test_views_move_maps_with_the_image():
    torch.manual_seed(0)
    views = MaskConsistentViews(size=32, color_strength=0.0, grayscale=0.0, blur=0.0)
    maps = torch.rand(4, 1, 32, 32)
    pixels = maps.expand(-1, 3, -1, -1).clone()  # the image is its own map
    out = views(pixels, maps, torch.ones(4, 1, dtype=torch.bool))
    torch.testing.assert_close(out.pixel_values_1[:, :1], out.object_maps_1, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pixel_values_2[:, :1], out.object_maps_2, atol=1e-5, rtol=0)
    assert not torch.allclose(out.object_maps_1, out.object_maps_2)


def test_hue_jitter_is_its_own_setting():
    torch.manual_seed(0)
    pixels = torch.rand(8, 3, 16, 16)
    maps, valid = torch.ones(8, 1, 16, 16), torch.ones(8, 1, dtype=torch.bool)
    still = MaskConsistentViews(16, scale=(1.0, 1.0), color_strength=0.0, grayscale=0.0, blur=0.0)
    turned = MaskConsistentViews(16, scale=(1.0, 1.0), color_strength=0.0, hue=0.5, grayscale=0.0, blur=0.0)

    def distance(views):  # per image, to the image or its mirror (a view may be flipped)
        out = views(pixels, maps, valid).pixel_values_1
        return torch.minimum((out - pixels).abs().amax((1, 2, 3)), (out - pixels.flip(-1)).abs().amax((1, 2, 3)))

    assert distance(still).max() < 1e-5  # without colour jitter the colours are the image's
    assert (distance(turned) > 0.05).sum() >= 4  # hue jitter moves them (p = 0.8 per image)


def test_object_cropped_out_of_either_view_is_invalid_in_both():
    views = MaskConsistentViews(size=32, scale=(0.05, 0.06), min_mass=0.5)
    maps = torch.zeros(16, 2, 32, 32)
    maps[:, 0] = 1.0  # everywhere: always kept
    maps[:, 1, 0, 0] = 1.0  # one corner pixel: almost always cropped away
    out = views(torch.rand(16, 3, 32, 32), maps, torch.ones(16, 2, dtype=torch.bool))
    assert out.object_valid[:, 0].all() and not out.object_valid[:, 1].any()


def test_two_processes_gather_negatives_from_both(tmp_path):
    run_two_processes(Path(__file__).with_name("dist_nt_xent.py"), str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 5, requires_grad=True), torch.randn(8, 5)
    valid = torch.tensor([1, 1, 0, 1, 1, 1, 0, 1]).bool()
    global_loss = loop_nt_xent(z1[valid], z2[valid], 0.3)
    # each process averages over its own anchors; with 3 + 3 valid objects the mean of both is the global loss
    assert [r["valid"] for r in ranks] == [6, 6]
    assert abs((ranks[0]["loss"] + ranks[1]["loss"]) / 2 - global_loss.item()) < 1e-5
    global_loss.backward()
    # gradients flow back through the gather: the sum of the processes' gradients is the global gradient x 2
    combined = torch.tensor(ranks[0]["grad"] + ranks[1]["grad"])
    torch.testing.assert_close(combined, 2 * z1.grad, atol=1e-5, rtol=1e-4)


def test_model_saves_whole_and_backbone_for_automodel(tmp_path):
    config = InstanceContrastiveConfig(
        ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
        projection_dim=8,
        hidden_dim=16,
    )
    model = InstanceContrastiveModel(config)
    model.save_pretrained(tmp_path)
    model.backbone.save_pretrained(tmp_path / "backbone")
    assert type(AutoModel.from_pretrained(tmp_path)).__name__ == "InstanceContrastiveModel"
    backbone = AutoModel.from_pretrained(tmp_path / "backbone")
    assert type(backbone).__name__ == "ResNetModel"
    torch.testing.assert_close(
        backbone.embedder.embedder.convolution.weight, model.backbone.embedder.embedder.convolution.weight
    )


def test_a_few_hundred_steps_lower_the_loss_and_beat_random_init_on_the_knn_probe(tmp_path):
    from transformers import TrainingArguments

    from free_atm.training import (
        ContrastiveArguments,
        ObjectMapCollator,
        ProbeCallback,
        contrastive_trainer,
        probe_backbone,
        shapes_probe_splits,
    )

    args = ContrastiveArguments(
        dataset_name="shapes:2000",
        image_size=64,
        hue=0.5,  # the probe asks for shape kinds: colour must not solve the instance task
        grayscale=0.5,
        backbone_depths=[1, 1],
        backbone_widths=[32, 64],
        projection_dim=64,
        hidden_dim=256,
        probe_scenes=400,
    )
    training_args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=200,
        per_device_train_batch_size=64,
        learning_rate=3e-3,
        warmup_steps=20,
        weight_decay=1e-4,
        logging_steps=20,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same float sums, hence the same run, on any machine
    try:
        torch.manual_seed(training_args.seed)  # the trainer's model starts from these weights too
        initial = InstanceContrastiveModel(args.model_config()).backbone
        splits = shapes_probe_splits(args.probe_scenes)
        random_init = probe_backbone(initial, splits["train"], splits["test"], ObjectMapCollator(args.image_size))
        trainer = contrastive_trainer(args, training_args)
        trainer.train()
    finally:
        torch.set_num_threads(threads)
    probe = next(c for c in trainer.callback_handler.callbacks if isinstance(c, ProbeCallback))
    logs = [log for log in trainer.state.log_history if "loss" in log]
    losses, top1 = [log["loss"] for log in logs], [log["positive_top1"] for log in logs]
    assert sum(losses[-3:]) / 3 < sum(losses[:2]) / 2 - 0.5, losses
    assert top1[-1] > top1[0] + 0.05, top1
    trained = probe.history[-1]
    assert trained["step"] == 200 and any("knn_accuracy" in log for log in trainer.state.log_history)
    assert trained["knn_accuracy"] > random_init["knn_accuracy"], (trained, random_init)
    assert trained["linear_accuracy"] > random_init["linear_accuracy"] + 0.03, (trained, random_init)


def test_mix_draws_the_requested_share_from_each_source():
    import pytest

    from free_atm.training.rows import undecoded
    from free_atm.training.sources import load_source, mix_sources
    from free_atm.world import shapes_dataset

    generated = undecoded(shapes_dataset(40, seed=21), "generated")
    real = undecoded(shapes_dataset(40, seed=22), "real")
    mixed = mix_sources(generated, real, ratio=0.25, seed=0)
    assert mixed.column_names == ["image", "objects", "attention_maps", "row"]
    from_real = sum(row.startswith("real:") for row in mixed["row"])
    assert 0.15 < from_real / len(mixed) < 0.45 and len(mixed) > 40
    assert len(mix_sources(generated, real, ratio=0.0)) == 40
    assert len(load_source("shapes:5")) == 5
    with pytest.raises(ValueError, match="the mix ratio must lie in \\[0, 1\\), got 1.5"):
        mix_sources(generated, real, ratio=1.5)


def test_moco_queue_momentum_and_loss():
    from free_atm.training.contrastive.losses import moco_infonce

    torch.manual_seed(0)
    q, k, queue = torch.randn(3, 4), torch.randn(3, 4), F.normalize(torch.randn(5, 4), dim=-1)
    loss, _ = moco_infonce(q, k, queue, 0.2)
    qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    expected = (
        sum(
            torch.logsumexp(torch.cat([(qn[i] @ kn[i]).view(1), queue @ qn[i]]) / 0.2, 0) - qn[i] @ kn[i] / 0.2
            for i in range(3)
        )
        / 3
    )
    torch.testing.assert_close(loss, expected)

    config = InstanceContrastiveConfig(
        ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
        projection_dim=8,
        hidden_dim=16,
        method="moco",
        momentum=0.9,
        queue_size=6,
    )
    model = InstanceContrastiveModel(config).train()
    key_weight = model.key_projection[0].weight
    torch.testing.assert_close(key_weight, model.projection[0].weight)  # the key encoder starts as a copy
    assert not key_weight.requires_grad
    with torch.no_grad():
        model.projection[0].weight.add_(1.0)
    before = key_weight.clone()
    valid = torch.tensor([[True, False], [True, True]])
    out = model(
        torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), torch.rand(2, 2, 32, 32), torch.rand(2, 2, 32, 32), valid
    )
    torch.testing.assert_close(key_weight, 0.9 * before + 0.1 * model.projection[0].weight)
    assert out.valid_objects == 3 and int(model.queue_ptr) == 3  # only valid keys are queued
    out.loss.backward()
    assert model.key_backbone.embedder.embedder.convolution.weight.grad is None
    model(
        torch.rand(2, 3, 32, 32),
        torch.rand(2, 3, 32, 32),
        torch.rand(2, 2, 32, 32),
        torch.rand(2, 2, 32, 32),
        torch.ones(2, 2, dtype=torch.bool),
    )
    assert int(model.queue_ptr) == (3 + 4) % 6  # the ring wraps


def test_moco_under_two_processes_shuffles_bn_and_queues_both_processes_keys(tmp_path):
    run_two_processes(Path(__file__).with_name("dist_moco.py"), str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # shuffling across processes and putting back is exact: in eval mode each key is its local key
    assert max(r["key_difference"] for r in ranks) < 1e-5
    # both processes enqueue the 5 + 5 valid keys of the global batch, in the same order
    assert [r["valid_objects"] for r in ranks] == [10, 10] and [r["queue_ptr"] for r in ranks] == [10, 10]
    assert ranks[0]["queue"] == ranks[1]["queue"]


def test_training_script_runs_moco_on_two_processes_and_the_backbone_probes(tmp_path, capsys):
    from free_atm.cli import main
    from free_atm.training import ObjectMapCollator, probe_backbone, shapes_probe_splits

    run_two_processes(
        ROOT / "trainers" / "train_contrastive.py",
        *("--dataset_name", "shapes:16", "--method", "moco", "--queue_size", "32", "--image_size", "32"),
        *("--backbone_depths", "1", "1", "--backbone_widths", "8", "16", "--projection_dim", "8"),
        *("--output_dir", str(tmp_path), "--max_steps", "3", "--per_device_train_batch_size", "4"),
        *("--use_cpu", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1"),
    )
    model = InstanceContrastiveModel.from_pretrained(tmp_path)
    assert model.config.method == "moco" and int(model.queue_ptr) > 0
    assert type(AutoModel.from_pretrained(tmp_path / "backbone")).__name__ == "ResNetModel"
    main(["probe", str(tmp_path / "backbone"), "--scenes", "24", "--image-size", "32", "--random-init"])
    printed = json.loads(capsys.readouterr().out)
    splits = shapes_probe_splits(24)
    expected = probe_backbone(model.backbone, splits["train"], splits["test"], ObjectMapCollator(32))
    assert printed["knn_accuracy"] == expected["knn_accuracy"]
    assert set(printed["random_init"]) == {"knn_accuracy", "linear_accuracy"}


TINY_RUN = (
    *("--dataset_name", "shapes:16", "--image_size", "32", "--backbone_depths", "1", "1"),
    *("--backbone_widths", "8", "16", "--projection_dim", "8", "--hidden_dim", "16", "--max_steps", "2"),
    *("--per_device_train_batch_size", "4", "--use_cpu", "--report_to", "none", "--save_strategy", "no"),
)


def test_accelerate_launch_writes_model_backbone_and_card(tmp_path):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1"]
    script = [str(ROOT / "trainers" / "train_contrastive.py"), *TINY_RUN, "--probe_scenes", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*command, *script, "--output_dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert type(AutoModel.from_pretrained(tmp_path / "backbone")).__name__ == "ResNetModel"
    card = (tmp_path / "README.md").read_text()
    assert "instance-level SimCLR" in card and "shapes:16" in card
    assert "knn_accuracy (shapes world, object level)" in card and "linear_accuracy" in card


def test_push_to_hub_uploads_model_backbone_and_card(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "trainers"))
    from hub_fake import fake_hub
    from train_contrastive import main

    argv = ["train_contrastive.py", *TINY_RUN, "--output_dir", str(tmp_path), "--level", "image"]
    monkeypatch.setattr(sys, "argv", [*argv, "--push_to_hub", "--hub_model_id", "me/simclr-image"])
    with fake_hub(monkeypatch) as hub:
        main()
    assert {"name": "simclr-image", "organization": "me"}.items() <= hub.created[0].items()
    assert {"README.md", "config.json", "model.safetensors", "backbone/config.json"} <= set(hub.uploaded)
    assert "image-level SimCLR (the baseline)" in hub.uploaded["README.md"].decode()


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_killed_training_resumes_to_the_uninterrupted_result(method, tmp_path):
    arguments = [
        *("--dataset_name", "shapes:16", "--image_size", "32", "--backbone_depths", "1", "1"),
        *("--backbone_widths", "8", "16", "--projection_dim", "8", "--hidden_dim", "16", "--max_steps", "6"),
        *("--per_device_train_batch_size", "4", "--use_cpu", "--report_to", "none", "--save_strategy", "steps"),
        *("--save_steps", "2", "--method", method, "--queue_size", "64", "--logging_steps", "1"),
    ]
    script = ROOT / "trainers" / "train_contrastive.py"
    weights = assert_killed_run_resumes_to_the_uninterrupted_result(script, arguments, tmp_path)
    if method == "moco":
        # the queue's fill and contents (compared with the other weights) came through the crash
        assert int(weights["crash"]["queue_ptr"]) == int(weights["whole"]["queue_ptr"]) > 0
