"""The README's main job, and the package's own configuration."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

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
    (["--guidance-scale", "-2"], "--guidance-scale must be 0 or more (1 or less turns guidance off), got -2.0"),
    (["--height", "100"], "--height must be a positive multiple of 8 (the VAE's downsampling), got 100"),
    (["--width", "0"], "--width must be a positive multiple of 8 (the VAE's downsampling), got 0"),
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
    import free_atm.diffusion.loading as loading

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
        ({"attention_resolution": -4}, "attention_resolution must be a positive int"),
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
