"""Where the folders shipped with the package are, in a checkout and in an installed wheel alike."""

from __future__ import annotations

from importlib import resources

CUSTOM_PIPELINES = ("free_atm", "free_atm_sdxl", "free_atm_sd3", "free_atm_flux")


def custom_pipeline_path(name: str = "free_atm") -> str:
    """The folder to pass as ``custom_pipeline=``: ``"free_atm"`` (SD 1.x/2.x), ``"free_atm_sdxl"``,
    ``"free_atm_sd3"`` or ``"free_atm_flux"``."""
    if name not in CUSTOM_PIPELINES:
        raise ValueError(f"unknown custom pipeline {name!r}; choose one of {CUSTOM_PIPELINES}")
    return str(resources.files(f"free_atm.custom_pipelines.{name}"))
