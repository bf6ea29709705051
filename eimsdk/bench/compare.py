"""The cross-model disentanglement table of benchmark runs: ``D`` and ``S`` with 95% bootstrap intervals.

Per model and method: the reader-based ``D`` (:mod:`eimsdk.metrics.disentanglement`) with its interval over edit
tasks (from the run's per-task results; from a ``summary.json`` alone, the parametric interval of
:func:`eimsdk.metrics.intervals.bootstrap_dci_from_matrix`), its mean targeted share, the reader-free ``S``
(``--internal N``) with its interval over sources when the run kept per-source scores, and the precise-edit rate.
``eimsdk bench`` writes it as ``OUT/comparison.md``; for finished runs or stored summaries::

    python -m eimsdk.bench.compare OUT_OR_SUMMARY [...] [--methods hsds text] [--json table.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from eimsdk.errors import InputError


def comparison_rows(summary: dict[str, Any], results: list[dict[str, Any]] | None = None,
                    methods: Sequence[str] | None = None, resamples: int = 2000) -> list[dict[str, Any]]:
    """One row per (model, method) of ``summary``; ``results`` (the run's per-task records) give task intervals."""
    from eimsdk.bench.runner import model_label
    from eimsdk.metrics.disentanglement import ResponseMatrix
    from eimsdk.metrics.intervals import bootstrap_dci, bootstrap_dci_from_matrix, bootstrap_mean

    ref = summary["reference_strength"]
    rows = []
    for model, by_method in summary["table"].items():
        for method, entry in by_method.items():
            if methods and method not in methods:
                continue
            row: dict[str, Any] = {"model": model, "method": method, "tasks": entry["n"]}
            d = entry.get("disentanglement")
            if d and d.get("overall") is not None:
                matrix = ResponseMatrix.from_dict(d["matrix"])
                row["D"] = d["overall"]
                row["targeted"] = float(np.mean([v for v in d["targeted"].values() if v is not None]))
                if results is not None:
                    changes = [(r["attribute"], e["changes"]) for r in results
                               if model_label(r["model"]) == model and r["method"] == method
                               for e in r.get("edits", []) if e["strength"] == ref]
                    row["D_interval"] = bootstrap_dci(changes, matrix.rows, matrix.cols, resamples=resamples)
                    row["D_interval_kind"] = "tasks"
                else:
                    row["D_interval"] = bootstrap_dci_from_matrix(matrix, resamples=resamples)
                    row["D_interval_kind"] = "cells"
            internal = entry.get("internal", {})
            if "score" in internal:
                row["S"], row["S_sources"] = internal["score"], internal.get("sources")
                if internal.get("per_source"):
                    row["S_interval"] = bootstrap_mean(internal["per_source"], resamples=resamples)
            at_ref = entry["by_strength"].get(f"{ref:g}", {})
            row["precise"], row["precise_ci"] = at_ref.get("precise"), at_ref.get("precise_ci")
            rows.append(row)
    return rows


def _cell(value: float | None, interval: Sequence[float] | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def comparison_markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = ["| model | method | tasks | D [95% interval] | targeted | S [95% interval] | sources (S) | precise |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['method']} | {r['tasks']} | {_cell(r.get('D'), r.get('D_interval'))} | "
                     f"{_cell(r.get('targeted'))} | {_cell(r.get('S'), r.get('S_interval'))} | "
                     f"{r.get('S_sources') or '-'} | {_cell(r.get('precise'), r.get('precise_ci'))} |")
    return "\n".join(lines) + "\n"


def load_run(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """A run folder (``summary.json``, and ``results.jsonl`` when kept) or a ``summary.json`` file."""
    path = Path(path)
    summary_path = path / "summary.json" if path.is_dir() else path
    if not summary_path.is_file():
        raise InputError(f"{str(path)!r} is neither a benchmark output folder with summary.json nor a summary.json")
    summary = json.loads(summary_path.read_text())
    results_path = summary_path.parent / "results.jsonl"
    results = ([json.loads(line) for line in results_path.read_text().splitlines() if line.strip()]
               if results_path.is_file() else None)
    return summary, results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eimsdk.bench.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="benchmark output folders or summary.json files")
    p.add_argument("--methods", nargs="+", help="only these method labels (default: all)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    rows = []
    for run in args.runs:
        summary, results = load_run(run)
        rows += comparison_rows(summary, results, args.methods)
    print(comparison_markdown(rows), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
