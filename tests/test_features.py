"""The diffusion U-Net as a feature extractor: hooked features against a forward written out by hand, early
exit, the clean input at t = 0, skip pairs against the up resnets' input widths, DifFeed, the heads through
a save and a load, loading pipelines offline, and a short training run on the shapes labels."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from free_atm.features import (
    DifFeed,
    DifFormer,
    DiffusionFeatureExtractor,
    DiffusionLinearProbe,
    load_feature_extractor,
)
from free_atm.features.recipe import DiffusionHeadArguments


def tiny_unet() -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8,
    ).eval()  # fmt: skip


def scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000)


def test_hooked_features_are_the_tensors_of_a_forward_written_out():
    unet, images = tiny_unet(), torch.rand(3, 3, 16, 16)
    names = ["conv_in", "down_blocks.0.resnets.0", "down_blocks.0.downsamplers.0"]
    extractor = DiffusionFeatureExtractor(unet, scheduler(), names, [0, 250], noise_seed=5)
    features = extractor(images)
    pattern = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))  # draw 0: seed 5
    for t in (0, 250):
        clean = images * 2 - 1
        sample = clean if t == 0 else scheduler().add_noise(clean, pattern.expand(3, -1, -1, -1), torch.tensor([t]))
        with torch.no_grad():
            embedding = unet.time_embedding(unet.time_proj(torch.full((3,), t)))
            stem = unet.conv_in(sample)
            resnet = unet.down_blocks[0].resnets[0](stem, embedding)
            down = unet.down_blocks[0].downsamplers[0](resnet)
        for name, expected in zip(names, (stem, resnet, down)):
            torch.testing.assert_close(features[(t, name)], expected, msg=f"t={t} {name}")
    assert not torch.allclose(features[(0, "conv_in")], features[(250, "conv_in")])


def test_early_exit_gives_the_full_pass_features_and_runs_nothing_after():
    unet, images = tiny_unet(), torch.rand(2, 3, 16, 16)
    late = DiffusionFeatureExtractor(unet, scheduler(), ["down_blocks.1.attentions.0", "up_blocks.1.resnets.1"], [90])
    early = DiffusionFeatureExtractor(unet, scheduler(), ["down_blocks.1.attentions.0"], [90])
    calls = []
    hook = unet.up_blocks[0].register_forward_hook(lambda *args: calls.append(1))
    first = early(images)
    assert not calls  # the forward stopped at the last needed block
    second = late(images)
    hook.remove()
    assert calls
    key = (90, "down_blocks.1.attentions.0")
    torch.testing.assert_close(first[key], second[key])
    with pytest.raises(ValueError, match="block 'down_blocks.9' is not one of the U-Net's blocks"):
        DiffusionFeatureExtractor(unet, scheduler(), ["down_blocks.9"], [90])
    with pytest.raises(ValueError, match="timestep 1000 is outside the scheduler's noise levels 0..999"):
        DiffusionFeatureExtractor(unet, scheduler(), ["conv_in"], [1000])


def test_blocks_are_listed_in_forward_order_and_skips_pair_as_the_up_resnets_are_wide():
    unet = tiny_unet()
    extractor = DiffusionFeatureExtractor(unet, scheduler(), ["mid_block"], [0])
    blocks = {block.name: block for block in extractor.list_blocks(32)}
    assert list(blocks)[:3] == ["conv_in", "down_blocks.0.resnets.0", "down_blocks.0.downsamplers.0"]
    assert [b.ordinal for b in blocks.values()] == list(range(1, len(blocks) + 1))
    assert blocks["mid_block"].grid == (16, 16) and blocks["mid_block"].channels == 32  # 32 px: grids double
    pairs = extractor.skip_pairs()
    previous = None
    for name, block in {b.name: b for b in extractor.all_blocks}.items():
        if name in pairs and ".resnets." in name:
            # an up resnet reads the previous block's output and its skip, concatenated
            resnet = unet.get_submodule(name)
            assert resnet.conv1.in_channels == previous.channels + extractor.block(pairs[name]).channels, name
            assert extractor.block(pairs[name]).grid == previous.grid or ".upsamplers." not in previous.name
        previous = block
    assert (
        pairs["up_blocks.1.resnets.1"] == "conv_in"
        and pairs["up_blocks.0.attentions.0"] == pairs["up_blocks.0.resnets.0"]
    )


def test_t_zero_reads_the_clean_latents_of_a_latent_model(tmp_path):
    from free_atm.diffusion.stable_diffusion import FreeATMDiffusionPipeline
    from free_atm.testing import tiny_sd_components

    FreeATMDiffusionPipeline(**tiny_sd_components()).save_pretrained(tmp_path / "sd")
    extractor = load_feature_extractor(str(tmp_path / "sd"), ["mid_block"], [0, 500])
    seen = []
    extractor.unet.conv_in.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].clone()))
    images = torch.rand(2, 3, 64, 64)
    extractor(images)
    with torch.no_grad():
        latents = extractor.vae.encode(images * 2 - 1).latent_dist.mean * extractor.vae.config.scaling_factor
    torch.testing.assert_close(seen[0], latents)  # t = 0: the clean input itself
    assert not torch.allclose(seen[1], latents)
    # text-free: the empty prompt's encoding, from the pipeline's own text encoder
    pipe = FreeATMDiffusionPipeline.from_pretrained(tmp_path / "sd")
    with torch.no_grad():
        ids = pipe.tokenizer("", padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt")
        empty = pipe.text_encoder(ids.input_ids)[0]
    torch.testing.assert_close(extractor.conditioning["encoder_hidden_states"], empty)


def test_unconditional_and_sdxl_pipelines_load_offline(tmp_path):
    from free_atm.diffusion.stable_diffusion_xl import FreeATMStableDiffusionXLPipeline
    from free_atm.testing import tiny_sdxl_components

    DDPMPipeline(unet=tiny_unet(), scheduler=scheduler()).save_pretrained(tmp_path / "ddpm")
    extractor = load_feature_extractor(str(tmp_path / "ddpm"), ["up_blocks.0.attentions.0"], [100], noise_draws=2)
    assert extractor.vae is None and extractor.conditioning == {}
    assert extractor(torch.rand(2, 3, 16, 16))[(100, "up_blocks.0.attentions.0")].shape == (2, 32, 8, 8)
    FreeATMStableDiffusionXLPipeline(**tiny_sdxl_components()).save_pretrained(tmp_path / "sdxl")
    extractor = load_feature_extractor(str(tmp_path / "sdxl"), ["mid_block"], [100], image_size=64)
    assert set(extractor.conditioning["added_cond_kwargs"]) == {"text_embeds", "time_ids"}
    assert extractor(torch.rand(1, 3, 64, 64))[(100, "mid_block")].ndim == 4
    with pytest.raises(ValueError, match="does not exist"):
        load_feature_extractor(str(tmp_path / "nothing"), ["mid_block"], [0])


def head_arguments(head: str, **extra) -> DiffusionHeadArguments:
    return DiffusionHeadArguments(
        head=head, blocks=["down_blocks.1.attentions.0", "up_blocks.0.attentions.1"], timesteps=[0, 100],
        hidden_size=16, num_heads=2, **extra,
    )  # fmt: skip


def unconditional_extractor(tmp_path, arguments: DiffusionHeadArguments):
    DDPMPipeline(unet=tiny_unet(), scheduler=scheduler()).save_pretrained(tmp_path / "ddpm")
    arguments.unet = str(tmp_path / "ddpm")
    return arguments.extractor()


def test_diffeed_with_zero_feedback_is_the_single_pass_and_trains_only_the_feedback(tmp_path):
    arguments = head_arguments("diffeed")
    extractor = unconditional_extractor(tmp_path, arguments)
    model = arguments.head_model(extractor, ["a", "b", "c"])
    up_resnets = [f"up_blocks.{i}.resnets.{j}" for i in range(2) for j in range(2)]  # layers_per_block + 1
    assert model.config.feedback_blocks == up_resnets  # every up resnet by default
    images = torch.rand(4, 3, 16, 16)
    single = extractor(images)
    model.train()
    with torch.no_grad():
        for layer in model.feedback:
            layer[0].weight.zero_()
    fed = model.features_of(images)
    for key, value in zip(model.config.feature_keys(), fed):
        torch.testing.assert_close(value, single[key], msg=str(key))
    torch.manual_seed(1)
    for layer in model.feedback:
        torch.nn.init.normal_(layer[0].weight)
    fed = model.features_of(images)
    assert not torch.allclose(fed[-1], single[model.config.feature_keys()[-1]])
    model(pixel_values=images, labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    assert all(layer[0].weight.grad.abs().sum() > 0 for layer in model.feedback)
    assert all(p.grad is None for p in extractor.unet.parameters())


@pytest.mark.parametrize("head", ["linear", "difformer", "diffeed"])
def test_heads_save_and_load_to_the_same_logits(head, tmp_path):
    arguments = head_arguments(head)
    extractor = unconditional_extractor(tmp_path, arguments)
    model = arguments.head_model(extractor, ["a", "b", "c"]).eval()
    model.save_pretrained(tmp_path / "head")
    kind = {"linear": DiffusionLinearProbe, "difformer": DifFormer, "diffeed": DifFeed}[head]
    loaded = kind.from_pretrained(tmp_path / "head").eval()
    assert loaded.config.id2label == {0: "a", 1: "b", 2: "c"} and loaded.config.unet == arguments.unet
    assert not any("unet" in name for name in loaded.state_dict())  # the frozen U-Net is not saved
    images = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="attach"):
        loaded(pixel_values=images)
    loaded.attach(load_feature_extractor(loaded.config.unet, loaded.config.blocks, loaded.config.timesteps))
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=images).logits, model(pixel_values=images).logits)


def test_training_script_beats_chance_on_the_shapes_labels_and_saves_a_loadable_head(tmp_path):
    import json
    import subprocess
    import sys

    from training_runs import ENV, ROOT

    command = [
        sys.executable, str(ROOT / "trainers" / "train_diffusion_probe.py"), "--output_dir", str(tmp_path),
        "--dataset_name", "shapes:600", "--blocks", "up_blocks.1.resnets.0", "--timesteps", "100",
        "--num_train_epochs", "30", "--per_device_train_batch_size", "64", "--learning_rate", "3e-3",
        "--weight_decay", "0.01", "--report_to", "none", "--save_strategy", "no", "--seed", "0",
    ]  # fmt: skip
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval_results.json").read_text())
    # five kinds, 300 held-out scenes: chance is 0.2 (standard deviation 0.023)
    assert metrics["eval_accuracy"] > 0.3, metrics
    head = DiffusionLinearProbe.from_pretrained(tmp_path)
    assert head.config.id2label[0] == "circle" and head.config.blocks == ["up_blocks.1.resnets.0"]
    card = (tmp_path / "README.md").read_text()
    assert "up_blocks.1.resnets.0" in card and f"**{round(metrics['eval_accuracy'], 4)}**" in card
    listed = subprocess.run([*command[:4], "--list_blocks"], env=ENV, capture_output=True, text=True, timeout=300)
    assert "  9  mid_block" in listed.stdout and "96 ch  4x4" in listed.stdout, listed.stdout


def test_a_labelled_image_folder_trains_and_pushes_to_the_hub(tmp_path, monkeypatch):
    """A user's dataset: an image and a string label column, no test split (20% of train is held out)."""
    import json
    import sys

    from datasets import Dataset
    from hub_fake import fake_hub
    from PIL import Image
    from training_runs import ROOT

    colours = ["red", "blue", "green"] * 6
    rows = {"picture": [Image.new("RGB", (40, 40), c) for c in colours], "colour": colours}
    Dataset.from_dict(rows).to_parquet(str(tmp_path / "colours" / "data" / "train.parquet"))
    monkeypatch.syspath_prepend(str(ROOT / "trainers"))
    from train_diffusion_probe import main

    arguments = [
        "--dataset_name", str(tmp_path / "colours"), "--image_column", "picture", "--label_column", "colour",
        "--output_dir", str(tmp_path / "run"), "--max_steps", "3", "--per_device_train_batch_size", "4",
        "--report_to", "none", "--save_strategy", "no", "--push_to_hub", "--hub_model_id", "me/colour-probe",
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["train_diffusion_probe.py", *arguments])
    with fake_hub(monkeypatch) as hub:
        main()
    head = DiffusionLinearProbe.from_pretrained(tmp_path / "run")
    assert head.config.id2label == {0: "blue", 1: "green", 2: "red"}  # string labels, sorted
    assert json.loads((tmp_path / "run" / "eval_results.json").read_text())["eval_samples_per_second"] > 0
    assert {"name": "colour-probe", "organization": "me"}.items() <= hub.created[0].items()
    assert {"README.md", "model.safetensors", "config.json"} <= set(hub.uploaded)
    assert "me/colour-probe" in hub.uploaded["README.md"].decode()
