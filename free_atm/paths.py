"""Paths: what a path a user types means here, and where the folders shipped with the package are (in a
checkout and in an installed wheel alike).

Pitfall: a shell expands ``~`` and ``$HOME`` only when they are unquoted, so ``--out '~/x'`` reaches the
program as written; used as is, it would write into a folder literally named ``~`` in the current one,
while anything that expanded it (a lock, a check) looked elsewhere. Every path argument goes through
:func:`local_path` once, where it is read, and is used literally after that (no globbing: ``ds[1]`` is a
folder name).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

CUSTOM_PIPELINES = ("free_atm", "free_atm_sdxl", "free_atm_sd3", "free_atm_flux")


def custom_pipeline_path(name: str = "free_atm") -> str:
    """The folder to pass as ``custom_pipeline=``: ``"free_atm"`` (SD 1.x/2.x), ``"free_atm_sdxl"``,
    ``"free_atm_sd3"`` or ``"free_atm_flux"``."""
    if name not in CUSTOM_PIPELINES:
        raise ValueError(f"unknown custom pipeline {name!r}; choose one of {CUSTOM_PIPELINES}")
    return str(resources.files(f"free_atm.custom_pipelines.{name}"))


def local_path(name: str | os.PathLike) -> Path:
    """``name`` as a local path: ``~`` and environment variables (``$HOME``, ``${DATA}``) expanded, nothing
    else interpreted."""
    return Path(os.path.expandvars(os.path.expanduser(os.fspath(name))))
