"""The README's main job, and the package's own configuration."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from conftest import load_trainer_script

from free_atm import CaptureConfig
from free_atm.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


GENERATE_BAD_INPUTS = [
    (["--num-images", "0"], "--num-images must be a positive integer, got 0"),
    (["--num-images", "-3"], "--num-images must be a positive integer, got -3"),
    (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--steps", "-1"], "--steps must be a positive integer, got -1"),
    (["--shard-size", "0"], "--shard-size must be a positive integer, got 0"),
    (["--seed", "-1"], "--seed must be 0 or more, got -1"),
    (["--guidance-scale", "-2"], "--guidance-scale must lie in [0, 100] (1 or less turns guidance off), got -2.0"),
    (["--guidance-scale", "1e30"], "--guidance-scale must lie in [0, 100] (1 or less turns guidance off), got 1e+30"),
    (["--scheduler", "pndm"], "scheduler must be one of ['ddim', 'dpm_solver_2m', 'euler'], got 'pndm'"),
    (["--height", "100"], "--height must be a positive multiple of 8 (the VAE's downsampling), got 100"),
    (["--width", "0"], "--width must be a positive multiple of 8 (the VAE's downsampling), got 0"),
    (["--width", "65536"], "--width must be at most 4096 pixels, got 65536"),
    (["--steps", "1000000"], "num_inference_steps must be an int in [1, 1000], got 1000000"),
    (["--guidance-scale", "inf"], "--guidance-scale must lie in [0, 100] (1 or less turns guidance off), got inf"),
    (["--guidance-scale", "nan"], "--guidance-scale must lie in [0, 100] (1 or less turns guidance off), got nan"),
    (
        ["--timestep-range", "0", "nan"],
        "timestep_range must be two finite numbers (low, high) with low <= high, got [0.0, nan]",
    ),
    (["--dtype", "float8"], "--dtype must be one of float32, float16, bfloat16, got 'float8'"),
    (["--threshold", "2"], "threshold must lie in [0, 1], got 2.0"),
    (["--pixel-refinement", "-1"], "pixel_refinement must be an int in [0, 100], got -1"),
    (["--pixel-refinement", "1000000000"], "pixel_refinement must be an int in [0, 100], got 1000000000"),
    (["--refinement-power", "1000000000"], "refinement_power must be an int in [1, 64], got 1000000000"),
    (["--threshold-method", "mean"], "threshold_method must be one of ('fixed', 'otsu', 'competition'), got 'mean'"),
    (
        ["--model", "./no-such-model"],
        "model folder './no-such-model' does not exist; pass a diffusers pipeline folder",
    ),
    (["--model", "{tmp}"], "is not a diffusers pipeline folder (no model_index.json)"),
    (["--model", "not a model id"], "model 'not a model id' is neither a folder nor a valid Hub id"),
    (["--push-to-hub", "me/bad name!"], "--push-to-hub 'me/bad name!' is not a Hub repo id (owner/name)"),
    (["--prompts", "{tmp}/missing.txt"], "prompt file {tmp}/missing.txt does not exist"),
    (["--prompts", "{tmp}/prompts.yaml"], "must end in .txt, .jsonl or .csv, not '.yaml'"),
    (["--prompts", "{tmp}/absent.jsonl"], "absent.jsonl:2: object 'cat' does not occur in prompt 'a dog'"),
    (["--prompts", "{tmp}/empty.csv"], "empty.csv:3: empty prompt"),
    (["--prompts", "{tmp}/broken.jsonl"], "broken.jsonl:1: not valid JSON"),
]


@pytest.mark.parametrize(("arguments", "message"), GENERATE_BAD_INPUTS)
def test_generate_rejects_bad_input_before_loading_a_model(arguments, message, tmp_path, capsys, monkeypatch):
    import free_atm.models as loading

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(loading, "load_pipeline", no_loading)
    _write(tmp_path / "prompts.yaml", "prompt: a dog\n")
    rows = ['{"prompt": "a cat", "objects": ["cat"]}', '{"prompt": "a dog", "objects": ["cat"]}']
    _write(tmp_path / "absent.jsonl", "\n".join(rows) + "\n")
    _write(tmp_path / "empty.csv", "prompt,objects\na dog,dog\n,cat\n")
    _write(tmp_path / "broken.jsonl", '{"prompt": "a dog"\n')
    out = tmp_path / "out"
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--out", str(out), *arguments])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("free-atm generate: error: ") and error.count("\n") == 1, error
    assert message.replace("{tmp}", str(tmp_path)) in error
    assert "Traceback" not in error and not out.exists()


def test_generate_refuses_an_output_folder_that_is_not_a_dataset(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main(["generate", "--out", str(tmp_path)])
    assert f"--out {tmp_path} holds other files and no generation_config.json" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    with pytest.raises(SystemExit):
        main(["generate", "--out", str(tmp_path / "notes.txt")])
    assert "is a file, not a folder" in capsys.readouterr().err


def test_generate_checks_objects_with_the_tokenizer_before_writing(tmp_path, capsys):
    """The shipped model reads 24 tokens: an object past them is an error before anything is written."""
    prompts = tmp_path / "long.txt"
    prompts.write_text("a red circle on a gray background\n" + "a " * 30 + "red circle\n")
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        main(["generate", "--out", str(out), "--prompts", str(prompts), "--steps", "1"])
    error = capsys.readouterr().err
    assert f"{prompts}:2: object 'red circle'" in error and not out.exists()


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="--num-images must be a positive integer, got 0"):
        main(["--debug", "generate", "--num-images", "0", "--out", str(tmp_path / "out")])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"threshold_method": "mean"}, "threshold_method must be one of"),
        ({"layer_scales": [0]}, "layer_scales must be positive ints"),
        ({"timestep_range": (900, 100)}, "low <= high, got \\(900, 100\\)"),
        ({"attention_resolution": -4}, "attention_resolution must be an int in \\[1, 1024\\] or None, got -4"),
        ({"attention_resolution": 10**6}, "attention_resolution must be an int in \\[1, 1024\\] or None, got 1000000"),
        ({"threshold": 1.5}, "threshold must lie in \\[0, 1\\], got 1.5"),
    ],
)
def test_capture_config_rejects_bad_values(values, message):
    with pytest.raises(ValueError, match=message):
        CaptureConfig.from_dict(values)


def test_every_library_package_is_packaged():
    """pyproject lists packages explicitly (for the pipelines/ mapping); a new subpackage must be listed."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "free_atm").rglob("__init__.py")}
    assert on_disk <= listed


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["show", "{tmp}/nothing"], "dataset folder {tmp}/nothing does not exist"),
        (
            ["show", "{tmp}/plain"],
            "dataset {tmp}/plain lacks the free-atm columns ['prompt', 'objects', 'masks', 'boxes']",
        ),
        (["show", "{tmp}/plain", "--num-samples", "0"], "--num-samples must be in [1, 256], got 0"),
        (["show", "{tmp}/plain", "--columns", "-1"], "--columns must be in [1, 64], got -1"),
        (["show", "{tmp}/plain", "--cell", "32"], "--cell must be in [64, 2,048], got 32"),
        (["show", "{tmp}/plain", "--cell", "100000"], "--cell must be in [64, 2,048], got 100000"),
        (["show", "{tmp}/plain", "--out", "grid.txt"], "--out grid.txt must end in .png, .jpg, .jpeg or .webp"),
        (["probe", "./no-backbone"], "backbone folder ./no-backbone does not exist"),
        (["probe", "{tmp}", "--scenes", "1"], "--scenes must be in [2, 100,000], got 1"),
        (["probe", "{tmp}", "--scenes", "1000000000"], "--scenes must be in [2, 100,000], got 1000000000"),
        (["probe", "{tmp}", "--image-size", "0"], "--image-size must be in [16, 1,024], got 0"),
        (["probe", "{tmp}", "--pooling", "max"], "--pooling must be one of object, mean, cls, got 'max'"),
    ],
)
def test_show_and_probe_reject_bad_input(arguments, message, tmp_path, capsys, monkeypatch):
    from datasets import Dataset
    from PIL import Image

    plain = tmp_path / "plain"
    Dataset.from_dict({"image": [Image.new("RGB", (8, 8))]}).to_parquet(str(plain / "data" / "train.parquet"))
    monkeypatch.chdir(tmp_path)
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    capsys.readouterr()  # the set-up's progress bars
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count(": error: ") == 1 and "Traceback" not in error, error
    assert message.replace("{tmp}", str(tmp_path)) in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]  # no grid written


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"unet_steps": 0}, "--unet_steps must be positive, got 0"),
        ({"num_scenes": -5}, "--num_scenes must be positive, got -5"),
        ({"learning_rate": 0.0}, "--learning_rate must be positive, got 0.0"),
        ({"learning_rate": float("inf")}, "--learning_rate must be a finite number, got inf"),
        ({"grounding_weight": float("nan")}, "--grounding_weight must be a finite number, got nan"),
        ({"snr_gamma": -1.0}, "--snr_gamma must be 0 or more, got -1.0"),
        ({"caption_dropout": 1.0}, "--caption_dropout must lie in \\[0, 1\\), got 1.0"),
        ({"prediction_type": "sample"}, "--prediction_type must be one of epsilon, v_prediction, got 'sample'"),
        ({"vae_mixed_precision": "fp8"}, "--vae_mixed_precision must be one of no, bf16, got 'fp8'"),
        ({"init_from": "/no/such/pipeline"}, "--init_from /no/such/pipeline is not an exported pipeline folder"),
        ({"unet_mixed_precision": "fp16"}, "--unet_mixed_precision must be one of no, bf16, got 'fp16'"),
        ({"grounding_max_timestep": -1}, "--grounding_max_timestep must be 0 or more, got -1"),
        ({"render_workers": 0}, "--render_workers must be positive, got 0"),
        (
            {"unet_block_out_channels": [48, 100, 96]},
            "--unet_block_out_channels must be 3 multiples of 16 \\(norm groups\\), got \\[48, 100, 96\\]",
        ),
    ],
)
def test_shapes_trainer_rejects_bad_settings(values, message):
    script = load_trainer_script("train_shapes_diffusion")
    with pytest.raises(ValueError, match=message):
        script.ShapesTrainingArguments(**values)


@pytest.mark.parametrize(
    ("script", "arguments", "message"),
    [
        (
            "train_contrastive.py",
            ["--dataset_name", "{tmp}/plain", "--output_dir", "{tmp}/run"],
            "error: dataset {tmp}/plain lacks the free-atm columns ['objects', 'attention_maps']",
        ),
        (
            "train_mae.py",
            ["--dataset_name", "{tmp}/plain", "--output_dir", "{tmp}/run"],
            "train_mae.py: error: dataset {tmp}/plain lacks the free-atm columns ['objects', 'attention_maps']",
        ),
        (
            "train_blip.py",
            ["--dataset_name", "{tmp}/plain", "--output_dir", "{tmp}/run"],
            "error: dataset {tmp}/plain lacks the free-atm columns ['objects', 'attention_maps', 'prompt']",
        ),
        (
            "train_shapes_diffusion.py",
            ["--output_dir", "{tmp}/run", "--unet_steps", "0"],
            "train_shapes_diffusion.py: error: --unet_steps must be positive, got 0",
        ),
        (
            "train_shape_judge.py",
            ["--steps", "0", "--out", "{tmp}/run/judge.safetensors"],
            "train_shape_judge.py: error: --steps must be positive, got 0",
        ),
        (
            "train_shape_judge.py",
            ["--out", "{tmp}/run/judge.safetensors"],
            "train_shape_judge.py: error: --out {tmp}/run/judge.safetensors: the folder {tmp}/run does not exist",
        ),
    ],
)
def test_training_scripts_report_bad_input_in_one_line(script, arguments, message, tmp_path):
    import subprocess
    import sys

    from datasets import Dataset
    from PIL import Image

    Dataset.from_dict({"image": [Image.new("RGB", (8, 8))]}).to_parquet(str(tmp_path / "plain" / "data" / "t.parquet"))
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    result = subprocess.run(
        [sys.executable, str(ROOT / "trainers" / script), *arguments], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert message.replace("{tmp}", str(tmp_path)) in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


SETTINGS_BAD_INPUTS = [
    ("train_contrastive", ["--dataset_name", "shapes:many"], "'shapes:many': shapes:N needs a positive number of"),
    ("train_mae", ["--mask_ratio", "1.5"], "--mask_ratio must lie in (0, 1), got 1.5"),
    ("train_mae", ["--guided_ratio_max", "2"], "--guided_ratio_max must lie in [0, 1], got 2.0"),
    ("train_mae", ["--guided_schedule", "cosine"], "--guided_schedule must be one of linear, constant, got 'cosine'"),
    ("train_mae", ["--image_size", "30"], "--image_size 30 is not a multiple of --patch_size 8"),
    ("train_mae", ["--config_overrides", "hiden_size=3"], "--config_overrides 'hiden_size=3': key hiden_size isn't"),
    ("train_mae", ["--model_name_or_path", "./no-model"], "--model_name_or_path ./no-model is not a model folder"),
    ("train_mae", ["--probe_scenes", "1"], "--probe_scenes must be 0 (no probe) or at least 2, got 1"),
    ("train_contrastive", ["--probe_scenes", "1000000000"], "--probe_scenes must be in [0, 100,000], got 1000000000"),
    ("train_blip", ["--image_size", "100000"], "--image_size must be in [1, 1,024], got 100000"),
    ("train_mae", ["--train_val_split", "1"], "--train_val_split must lie in [0, 1), got 1.0"),
    ("train_blip", ["--position_prompts", "some"], "position prompts must be one of all, one, none, got 'some'"),
    ("train_blip", ["--grid", "0"], "--grid must be at least 1, got 0"),
    ("train_blip", ["--hidden_size", "30", "--num_heads", "4"], "--hidden_size 30 is not a multiple of --num_heads 4"),
    ("train_blip", ["--model_name_or_path", "./no-model"], "--model_name_or_path ./no-model is not a model folder"),
    ("train_blip", ["--vocab_size", "10"], "a vocabulary of 10 tokens cannot hold the 7 special tokens"),
    ("train_blip", ["--itc_queue_size", "-1"], "--itc_queue_size must be 0 (no momentum encoder) or more, got -1"),
    ("train_blip", ["--itc_alpha", "1"], "--itc_alpha must lie in [0, 1), got 1.0"),
    ("train_blip", ["--retrieval_scenes", "-2"], "--retrieval_scenes must be 0 (none) or more, got -2"),
    ("train_blip", ["--probe_scenes", "10"], "--probe_scenes 10: BLIP pretraining is measured by --retrieval_scenes"),
    ("train_contrastive", ["--max_steps", "0"], "--max_steps must be positive, or -1 to train for --num_train_"),
    ("train_mae", ["--learning_rate", "inf"], "--learning_rate must be a positive finite number, got inf"),
    ("train_mae", ["--base_learning_rate", "nan"], "--base_learning_rate must be a positive finite number, got nan"),
    ("train_blip", ["--num_train_epochs", "0"], "--num_train_epochs must be a positive finite number, got 0.0"),
    ("train_blip", ["--adam_beta2", "1"], "--adam_beta2 must be in [0, 1), got 1.0"),
    ("train_diffusion_probe", ["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be at"),
    ("train_diffusion_probe", ["--head", "mlp"], "--head must be one of linear, difformer, diffeed, got 'mlp'"),
    ("train_diffusion_probe", ["--noise_draws", "0"], "--noise_draws must be at least 1, got 0"),
    ("train_diffusion_probe", ["--blocks", "down_blocks.9"], "block 'down_blocks.9' is not one of the U-Net's"),
    ("train_diffusion_probe", ["--timesteps", "1000"], "timestep 1000 is outside the scheduler's noise levels 0..999"),
    ("train_diffusion_probe", ["--dataset_name", "shapes:1"], "'shapes:1': shapes:N needs at least 2 scenes"),
    ("train_diffusion_probe", ["--unet", "./no-unet"], "model folder './no-unet' does not exist"),
    (
        "train_diffusion_probe",
        ["--head", "diffeed", "--feedback_blocks", "mid_block"],
        "--feedback_blocks 'mid_block' has no skip connection to feed back along",
    ),
]


@pytest.mark.parametrize(("script", "bad", "message"), SETTINGS_BAD_INPUTS)
def test_training_scripts_report_bad_settings_in_one_line(script, bad, message, tmp_path, capsys, monkeypatch):
    """In this process (the script's own ``main`` and error reporting; the subprocess rows above show it
    is the same from a shell)."""
    import sys

    from free_atm.usage import run_reporting_bad_input

    module = load_trainer_script(script)
    arguments = ["--dataset_name", "shapes:4", "--output_dir", str(tmp_path / "run"), *bad]
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *arguments])
    with pytest.raises(SystemExit) as exit_info:
        run_reporting_bad_input(module.main, f"{script}.py")
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"{script}.py: error: {message}" in error, error
    assert not (tmp_path / "run").exists()


def test_a_training_run_holds_its_folder_and_resumes_only_its_own_settings(tmp_path):
    """What every Trainer script goes through (``training_run``): its folder is new, empty or a run of the
    same settings, the learning rate, seed and schedule included; a run that wrote nothing but its
    settings may start over with others; a dataset or another launch's folder is refused untouched."""
    from dataclasses import asdict

    from free_atm.data.lock import writer_lock
    from free_atm.run_settings import RUN_SETTINGS
    from free_atm.training import ContrastiveArguments
    from free_atm.training.arguments import FreeATMTrainingArguments
    from free_atm.training.run import training_run

    def start(folder, dataset="shapes:16", **training):
        arguments = FreeATMTrainingArguments(output_dir=str(folder), use_cpu=True, report_to="none", **training)
        with training_run(arguments, asdict(ContrastiveArguments(dataset))) as resume:
            return resume

    run = tmp_path / "run"
    assert start(run) is None and (run / RUN_SETTINGS).is_file()  # a new run
    assert start(run, "shapes:32", learning_rate=1e-3) is None  # nothing but settings written: starts over
    (run / "checkpoint-2").mkdir()
    (run / "checkpoint-2" / "trainer_state.json").write_text("{}")
    assert start(run, "shapes:32", learning_rate=1e-3) == str(run / "checkpoint-2")  # same settings: resumes
    for changed, named in [
        ({"learning_rate": 2e-3}, "learning_rate"),
        ({"seed": 1}, "seed"),
        ({"max_steps": 9}, "max_steps"),
    ]:
        with pytest.raises(ValueError, match=rf"holds a run with other settings \({named} differ\)"):
            start(run, "shapes:32", **{"learning_rate": 1e-3, **changed})

    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "generation_config.json").write_text("{}")
    (dataset / "README.md").write_text("the dataset's card")
    before = {p: p.read_bytes() for p in dataset.rglob("*")}
    with pytest.raises(ValueError, match="holds a free-atm dataset \\(generation_config.json\\) and no free_atm_run"):
        start(dataset)
    assert {p: p.read_bytes() for p in dataset.rglob("*")} == before  # byte for byte

    failed = tmp_path / "failed"
    arguments = FreeATMTrainingArguments(output_dir=str(failed), use_cpu=True, report_to="none")
    with pytest.raises(KeyError), training_run(arguments, {}):
        raise KeyError("the first step failed")
    assert not failed.exists()  # nothing left that looks like a run

    (tmp_path / "link").symlink_to(run)  # another launch, reaching the folder by another name
    held = writer_lock(tmp_path / "link", "training run", "--output_dir")
    with held, pytest.raises(ValueError, match=f"--output_dir {run} is being written by another training run"):
        start(run, "shapes:32", learning_rate=1e-3)
