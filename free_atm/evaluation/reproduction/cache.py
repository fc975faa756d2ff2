"""The reproduction's finished runs, one JSON file each, so that a rerun (or the next session) skips them.

A run is named (``simclr/synthetic_ours/seed1``) and keyed by its settings as well: a run whose settings
changed (more steps, another backbone) is another run and is computed again, while the old result stays
on disk for the setting that made it. A file is written whole or not at all, so a run killed midway is
simply run again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


class RunCache:
    """Results under ``root``: ``<name>-<hash of settings>.json`` holding the name, settings and result."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, name: str, settings: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return self.root / f"{name}-{digest}.json"

    def get(self, name: str, settings: dict[str, Any]) -> dict | None:
        """The result of a finished run, or ``None``."""
        path = self.path(name, settings)
        return json.loads(path.read_text())["result"] if path.is_file() else None

    def run(self, name: str, settings: dict[str, Any], compute: Callable[[], dict]) -> dict:
        """The cached result of ``name`` under ``settings``, else ``compute()``'s, stored first."""
        cached = self.get(name, settings)
        if cached is not None:
            return cached
        result = compute()
        path = self.path(name, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps({"name": name, "settings": settings, "result": result}, indent=2, default=str))
        partial.replace(path)
        return result
