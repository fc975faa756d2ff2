"""The paper's tables as Markdown: mean ± standard deviation over seeds, and "w/ ours" minus "synthetic"
in brackets, as the paper prints its gains. A cell of one seed says so instead of printing a spread of 0
(a run stopped part-way has the first seed of every row before the second of any).

``results[table][row][metric]`` is the list of one metric's values over seeds (fractions; printed in
percent); rows and columns follow :data:`TABLES`. Table 6 is ``results["table6"][count][metric]``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

#: the paper's rows, in its order
ROWS = {
    "random_init": "random init",
    "supervised": "supervised",
    "real": "real",
    "synthetic": "synthetic",
    "synthetic_ours": "synthetic w/ ours",
    "mix_ours": "mix w/ ours",
}


@dataclass(frozen=True)
class TableSpec:
    title: str
    metrics: dict[str, str]  # key in the results -> column header
    rows: tuple[str, ...]


SEGMENTATION = {"seg_miou": "seg. mIoU", "probe_accuracy": "linear probe acc"}
TABLES = {
    "table1": TableSpec("Table 1: SimCLR (ResNet)", SEGMENTATION, tuple(ROWS)),
    "table2": TableSpec(
        "Table 2: BLIP, positional retrieval R@1",
        {"txt_r1": "tr@1", "img_r1": "ir@1"},
        ("real", "synthetic", "synthetic_ours", "mix_ours"),
    ),
    "table3": TableSpec("Table 3: MoCo-v2 (ResNet)", SEGMENTATION, tuple(ROWS)),
    "table4": TableSpec("Table 4: MAE (ViT)", SEGMENTATION, tuple(ROWS)[1:]),
}
TABLE6_TITLE = "Table 6: MoCo-v2 w/ ours, more synthetic images"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(values: Sequence[float] | None, gain_over: Sequence[float] | None = None) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    text = f"{100 * mean:.1f} ± {100 * std:.1f}" if len(values) > 1 else f"{100 * mean:.1f} (1 seed)"
    if gain_over:
        text += f" ({100 * (mean - mean_std(gain_over)[0]):+.1f})"
    return text


def format_table(spec: TableSpec, rows: dict[str, dict[str, list[float]]]) -> str:
    """One table: a row per present row of ``spec.rows``; "synthetic w/ ours" carries its gain over
    "synthetic" where both have values."""
    lines = [f"**{spec.title}**", "", "| | " + " | ".join(spec.metrics.values()) + " |"]
    lines.append("|---|" + "---|" * len(spec.metrics))
    for row in spec.rows:
        if row not in rows:
            continue
        cells = []
        for metric in spec.metrics:
            baseline = rows.get("synthetic", {}).get(metric) if row == "synthetic_ours" else None
            cells.append(_cell(rows[row].get(metric), baseline))
        lines.append(f"| {ROWS[row]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_scaling_table(counts: dict[int | str, dict[str, list[float]]]) -> str:
    """Table 6: a column per synthetic-image count, a row per metric."""
    ordered = sorted(counts, key=int)
    lines = [f"**{TABLE6_TITLE}**", "", "| synthetic images | " + " | ".join(str(c) for c in ordered) + " |"]
    lines.append("|---|" + "---|" * len(ordered))
    for metric, header in SEGMENTATION.items():
        lines.append(f"| {header} | " + " | ".join(_cell(counts[c].get(metric)) for c in ordered) + " |")
    return "\n".join(lines)


def format_tables(results: dict) -> str:
    """Every table present in ``results``, in the paper's order, separated by blank lines."""
    parts = [format_table(spec, results[key]) for key, spec in TABLES.items() if key in results]
    if "table6" in results:
        parts.append(format_scaling_table(results["table6"]))
    return "\n\n".join(parts) + "\n"
