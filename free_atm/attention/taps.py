"""Forward hooks that keep what a layer's sub-modules produced (or received) during one processor call.

A capture processor wraps the processor that computes the layer's output; the taps let it read the query,
key or attention output that the wrapped processor formed itself instead of forming them a second time.
"""

from __future__ import annotations

import torch
from torch import nn


class ModuleTaps:
    """For the length of a ``with`` block, records the outputs of ``outputs`` and the first positional input
    of ``inputs`` (each a name to module; ``None`` modules are skipped)."""

    def __init__(self, outputs: dict[str, nn.Module | None], inputs: dict[str, nn.Module | None] | None = None):
        self.modules = {("out", name): m for name, m in outputs.items() if m is not None}
        self.modules.update({("in", name): m for name, m in (inputs or {}).items() if m is not None})
        self.records: dict[tuple[str, str], list[torch.Tensor]] = {key: [] for key in self.modules}

    def __enter__(self) -> ModuleTaps:
        self.handles = []
        for (kind, name), module in self.modules.items():
            store = self.records[(kind, name)]
            if kind == "out":
                handle = module.register_forward_hook(lambda _m, _i, output, store=store: store.append(output))
            else:
                handle = module.register_forward_pre_hook(lambda _m, inputs, store=store: store.append(inputs[0]))
            self.handles.append(handle)
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def output(self, name: str) -> torch.Tensor | None:
        """What module ``name`` returned, when it ran exactly once (else ``None``: fused or sliced paths)."""
        return self._one(("out", name))

    def input(self, name: str) -> torch.Tensor | None:
        """What module ``name`` received, when it ran exactly once (else ``None``)."""
        return self._one(("in", name))

    def _one(self, key: tuple[str, str]) -> torch.Tensor | None:
        records = self.records.get(key, [])
        return records[0] if len(records) == 1 else None
