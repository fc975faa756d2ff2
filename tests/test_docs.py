"""The documentation cannot go stale silently: the site builds in strict mode (a broken link or API
reference fails it), every Python and shell snippet of the README and the guides runs offline on the
shipped model or tiny components, the README's set-up commands are the ones CI runs, and the command
reference names every option of every command."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mktestdocs import check_md_file

ROOT = Path(__file__).resolve().parents[1]
#: the pages whose snippets run: the README, getting started and the guides (results show the commands
#: that produced their figures, which take hours)
PAGES = [ROOT / "README.md", ROOT / "docs" / "getting-started.md", *sorted((ROOT / "docs" / "guides").glob("*.md"))]


def test_the_site_builds_in_strict_mode(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "api" / "index.html").is_file()


def test_the_readme_links_to_files_that_exist():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    assert links and [link for link in links if "://" not in link and not (ROOT / link).exists()] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_snippet_runs(page, tmp_path, monkeypatch):
    """Shell blocks first, then Python blocks in one namespace, in a scratch folder (the Python reads
    what the shell wrote). Blocks with a title are not run here: the install and set-up commands (CI runs
    the latter, checked below) and the demo's server (``tests/test_demo.py`` serves it)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    check_md_file(page, lang="bash")
    check_md_file(page, lang="python", memory=True)


def test_the_readme_set_up_commands_are_the_ones_ci_runs():
    readme = (ROOT / "README.md").read_text()
    tests = re.search(r'```bash title="the tests"\n(.+?)\n```', readme).group(1)
    main_job = re.search(r'```bash title="the main job"\n(.+?)\n```', readme).group(1)
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert tests == ci
    assert main_job.startswith('pip install torch==2.13.0 && pip install -e ".[test]" && free-atm generate')


def test_the_command_reference_names_every_option():
    from free_atm.cli import build_parser

    reference = (ROOT / "docs" / "reference" / "cli.md").read_text()
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"free-atm {name} {option}"
        for name, parser in commands.choices.items()
        for action in parser._actions
        for option in action.option_strings
        if option not in ("-h", "--help") and f"`{option}" not in reference and f"/ {option}`" not in reference
    ]
    assert f"## `free-atm {next(iter(commands.choices))}`" in reference and missing == []
