"""The project's boundaries, by category: paths are expanded once and read literally, prompt files are read
whatever their encoding marks and Unicode form, and Ctrl-C ends every command in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from free_atm.cli import main
from free_atm.prompts import read_prompt_file

ROOT = Path(__file__).resolve().parent.parent
GENERATE = ["generate", "--model", "tiny-random", "--num-images", "2", "--steps", "1", "--shard-size", "2"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _shards(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "data").glob("*.parquet"))


@pytest.mark.parametrize(
    ("typed", "written"),
    [
        ("~/sets/ds", "home/sets/ds"),  # quoted in a shell, the tilde reaches the program unexpanded
        ("$DATA/ds", "data/ds"),
        ("${DATA}/ds[1]", "data/ds[1]"),  # a glob character class in a folder name is just a name
    ],
)
def test_a_path_is_expanded_once_and_read_literally(typed, written, tmp_path, monkeypatch, capsys):
    from free_atm.training.sources import load_source

    for variable, folder in (("HOME", "home"), ("DATA", "data")):
        monkeypatch.setenv(variable, str(tmp_path / folder))
    monkeypatch.chdir(tmp_path)
    main([*GENERATE, "--out", typed])
    assert _shards(tmp_path / written) == ["train-00000-of-00001.parquet"]
    assert not (tmp_path / "~").exists() and not (tmp_path / "$DATA").exists() and not (tmp_path / "${DATA}").exists()
    main(["show", typed, "--out", str(tmp_path / "grid.png")])  # read back by the same name
    assert "wrote 2 samples" in capsys.readouterr().out
    assert len(load_source(typed)) == 2


def test_a_name_too_long_for_the_file_system_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*GENERATE, "--out", str(tmp_path / ("a" * 300))])
    error = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "Traceback" not in error and len(error.splitlines()) == 1
    assert error.startswith("free-atm generate: error: a name in ") and "longer than the file system allows" in error


@pytest.mark.parametrize(
    ("name", "content", "outcome"),
    [
        ("folder.txt", None, "prompt file {path} is a folder, not a file"),
        ("binary.txt", b"a red circle\n\xa2\xff\x00 junk\n", "{path}:2: not UTF-8 text (byte 0xa2); save the"),
        ("excel.csv", "\ufeffprompt,objects\na red circle,red circle\n".encode(), ["red circle"]),
        ("nfd.jsonl", '{"prompt": "a caf\u00e9 on a table", "objects": ["cafe\u0301"]}\n'.encode(), ["cafe\u0301"]),
    ],
)
def test_prompt_files_are_read_whatever_their_marks_and_forms(name, content, outcome, tmp_path):
    """A byte-order mark (spreadsheets write one) is dropped; an object typed in another Unicode form than
    its prompt is found; a folder and bytes that are not UTF-8 are named with the file and line."""
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    if isinstance(outcome, str):
        with pytest.raises(ValueError) as error:
            read_prompt_file(path)
        assert str(error.value).startswith(outcome.format(path=path))
        return
    (prompt,) = read_prompt_file(path)
    assert prompt.objects == outcome and prompt.startswith("a ")


INTERRUPTED = [
    (
        [sys.executable, "-m", "free_atm", *GENERATE[:3], "--num-images", "400", "--steps", "50", "--out", "{out}"],
        "generation_config.json",
        "free-atm generate: interrupted; the finished shards are kept; rerun the same command to finish the dataset",
    ),
    (
        [sys.executable, str(ROOT / "trainers" / "train_contrastive.py"), "--dataset_name", "shapes:64"]
        + ["--image_size", "32", "--backbone_depths", "1", "1", "--backbone_widths", "8", "16", "--max_steps"]
        + ["100000", "--use_cpu", "--report_to", "none", "--output_dir", "{out}"],
        "free_atm_run.json",
        "train_contrastive.py: interrupted; what was finished is kept; rerun the same command to go on from it",
    ),
]


@pytest.mark.parametrize(("command", "started", "line"), INTERRUPTED)
def test_ctrl_c_ends_a_command_in_one_line_saying_what_is_kept(command, started, line, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(
        [part.replace("{out}", str(out)) for part in command],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        # as in a terminal: a suite started in the background (``cmd &``) passes SIGINT on ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 240
    while not (out / started).is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # into the work
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == line, stderr[-3000:]


@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (
            ["generate", "--num-imagez", "3"],
            "free-atm generate: error: unrecognized arguments: --num-imagez 3 (see free-atm generate --help)",
        ),
        (
            ["show", "ds", "--cell", "big"],
            "free-atm show: error: argument --cell: invalid int value: 'big' (see free-atm show --help)",
        ),
    ],
)
def test_an_argument_error_is_one_line_naming_the_command(arguments, line, capsys):
    with pytest.raises(SystemExit) as stop:
        main(arguments)
    assert stop.value.code == 2 and capsys.readouterr().err.strip() == line


@pytest.mark.parametrize(
    ("script", "arguments", "line"),
    [
        (
            "train_contrastive.py",
            ["--bogus_flag", "3"],
            "train_contrastive.py: error: the following arguments are required: --dataset_name/--dataset-name "
            "(see train_contrastive.py --help)",
        ),
        (
            "train_shapes_diffusion.py",
            ["--unet_steps", "many"],
            "train_shapes_diffusion.py: error: argument --unet_steps/--unet-steps: invalid int value: 'many' "
            "(see train_shapes_diffusion.py --help)",
        ),
    ],
)
def test_a_training_scripts_argument_error_is_one_line(script, arguments, line, capsys, monkeypatch):
    import runpy

    monkeypatch.setattr(sys, "argv", [script, *arguments])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(ROOT / "trainers" / script), run_name="__main__")
    error = capsys.readouterr().err
    assert stop.value.code == 2 and error.strip().splitlines()[-1] == line and "usage:" not in error


def test_show_names_an_image_that_does_not_decode_and_ignores_a_damaged_card(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from free_atm.world import shapes_dataset

    shard = tmp_path / "ds" / "data" / "train-00000-of-00001.parquet"
    shapes_dataset(2, seed=0).to_parquet(str(shard))
    (tmp_path / "ds" / "README.md").write_text("---\ndataset_info: [unclosed\n---\n")  # YAML that does not parse
    main(["show", str(tmp_path / "ds"), "--out", str(tmp_path / "grid.png")])  # the card is not needed
    assert "wrote 2 samples" in capsys.readouterr().out
    table = pq.read_table(shard)
    images = table.column("image").to_pylist()
    images[1] = {"bytes": b"not an image at all", "path": None}
    column = table.schema.get_field_index("image")
    field = table.schema.field(column)
    pq.write_table(table.set_column(column, field, pa.array(images, type=field.type)), shard)
    with pytest.raises(SystemExit) as stop:
        main(["show", str(tmp_path / "ds"), "--out", str(tmp_path / "again.png")])
    error = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "Traceback" not in error and len(error.splitlines()) == 1
    assert error.startswith(f"free-atm show: error: row {tmp_path / 'ds'}:1: an image does not decode")
    assert not (tmp_path / "again.png").exists()
