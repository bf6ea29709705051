"""The cross-model disentanglement table of benchmark runs: ``D`` and ``S`` with 95% bootstrap intervals.

Per model and method: the reader-based ``D`` (:mod:`eimsdk.metrics.disentanglement`) with its interval over edit
tasks (from the run's per-task results; from a ``summary.json`` alone, the parametric interval of
:func:`eimsdk.metrics.intervals.bootstrap_dci_from_matrix`), its mean targeted share, the reader-free ``S``
(``--internal N``) with its interval over sources when the run kept per-source scores, and the precise-edit rate.
Between every two models run with the same method on shared tasks (from per-task results), :func:`model_pairs`
gives the paired tests: exact McNemar on precise edits, paired bootstrap intervals of ``D_a - D_b`` and of
``S_a - S_b`` (by source id).
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
    from eimsdk.metrics.intervals import MIN_PAIRED, bootstrap_dci, bootstrap_dci_from_matrix, bootstrap_mean

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
                if min(matrix.counts, default=0) < MIN_PAIRED:  # a bootstrap of a task or two barely varies
                    row["D_interval_kind"] = f"none: fewer than {MIN_PAIRED} tasks in a row"
                elif results is not None:
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
                if len(internal.get("per_source") or []) >= MIN_PAIRED:
                    row["S_interval"] = bootstrap_mean(internal["per_source"], resamples=resamples)
            at_ref = entry["by_strength"].get(f"{ref:g}", {})
            row["precise"], row["precise_ci"] = at_ref.get("precise"), at_ref.get("precise_ci")
            rows.append(row)
    return rows


def _task_records(results: list[dict[str, Any]], ref: float) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """(model, method) -> task id -> the edit at the reference strength (``None`` when the unit failed)."""
    from eimsdk.bench.runner import model_label

    out: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in results:
        edit = next((e for e in r.get("edits", []) if e.get("strength") == ref), None)
        out.setdefault((model_label(r["model"]), r["method"]), {})[r["id"]] = {"attribute": r["attribute"],
                                                                               "edit": edit}
    return out


def model_pairs(runs: Sequence[tuple[dict[str, Any], list[dict[str, Any]] | None]],
                methods: Sequence[str] | None = None, resamples: int = 2000) -> list[dict[str, Any]]:
    """Paired tests between every two models that ran a method on shared tasks (runs without results are skipped).

    ``precise``: exact McNemar test (:func:`eimsdk.bench.stats.paired_test`); a failed unit is not precise.
    ``D``: paired bootstrap of the difference (:func:`eimsdk.metrics.intervals.bootstrap_dci_difference`) on the
    shared tasks whose edits all ran. ``S`` (when both runs kept per-source scores with their source ids): the mean
    per-source difference with a bootstrap over shared sources. Runs must share the reference strength.
    """
    from itertools import combinations

    from eimsdk.bench.stats import paired_test
    from eimsdk.metrics.disentanglement import ResponseMatrix
    from eimsdk.metrics.intervals import bootstrap_dci_difference, bootstrap_paired_mean

    with_results = [(s, r) for s, r in runs if r is not None]
    refs = {s["reference_strength"] for s, _ in with_results}
    if len(refs) > 1:
        raise InputError(f"the runs have different reference strengths {sorted(refs)}; pairs need the same one")
    records: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    axes: dict[str, tuple[list[str], list[str]]] = {}
    internal: dict[tuple[str, str], dict[str, float]] = {}  # per-source S, keyed by source id
    for summary, results in with_results:
        for key, tasks in _task_records(results, summary["reference_strength"]).items():
            if key in records:
                raise InputError(f"model {key[0]!r} with method {key[1]!r} is in two runs; pass each once")
            records[key] = tasks
        for model, by_method in summary["table"].items():
            for method, entry in by_method.items():
                i = entry.get("internal") or {}
                if i.get("per_source") and len(i.get("source_ids") or []) == len(i["per_source"]):
                    internal[(model, method)] = dict(zip(i["source_ids"], i["per_source"]))
                d = entry.get("disentanglement") or {}
                if d.get("matrix") and method not in axes:
                    m = ResponseMatrix.from_dict(d["matrix"])
                    axes[method] = (list(m.rows), list(m.cols))
    pairs = []
    for method in dict.fromkeys(k[1] for k in records):
        if methods and method not in methods:
            continue
        models = [k[0] for k in records if k[1] == method]
        for ma, mb in combinations(models, 2):
            ta, tb = records[(ma, method)], records[(mb, method)]
            precise = {name: {k: bool(v["edit"] and v["edit"].get("success") and v["edit"].get("preserved_all"))
                              for k, v in t.items()} for name, t in (("a", ta), ("b", tb))}
            row: dict[str, Any] = {"method": method, "a": ma, "b": mb,
                                   "precise": paired_test(precise["a"], precise["b"])}
            if method in axes:
                ok = [k for k in ta if k in tb and ta[k]["edit"] and tb[k]["edit"]
                      and ta[k]["edit"].get("changes") and tb[k]["edit"].get("changes")]
                try:
                    row["D"] = bootstrap_dci_difference(
                        {k: (ta[k]["attribute"], ta[k]["edit"]["changes"]) for k in ok},
                        {k: (tb[k]["attribute"], tb[k]["edit"]["changes"]) for k in ok}, *axes[method],
                        resamples=resamples)
                except InputError as exc:
                    row["D_error"] = str(exc)
            sa, sb = internal.get((ma, method)), internal.get((mb, method))
            if sa and sb:
                row["S"] = bootstrap_paired_mean(sa, sb, resamples=resamples)
            pairs.append(row)
    return pairs


def pairs_markdown(pairs: list[dict[str, Any]]) -> str:
    """The paired tests between models as a Markdown table (empty string when there are none)."""
    from eimsdk.bench.stats import format_p

    if not pairs:
        return ""
    lines = ["| method | a | b | shared tasks | precise a / b | McNemar p | D a - b [95% interval] | p (D) "
             "| S a - b [95% interval] | p (S) |", "|---|---|---|---|---|---|---|---|---|---|"]

    def diff(d: dict[str, Any] | None) -> str:
        if not d:
            return "- | -"
        if d["p_value"] is None:
            return f"{d['difference']:+.3f} (too few to test) | -"
        return f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | {d['p_value']:.4f}"

    for r in pairs:
        pr = r["precise"]
        rates = "-" if pr["rate_a"] is None else f"{pr['rate_a']:.3f} / {pr['rate_b']:.3f}"
        lines.append(f"| {r['method']} | {r['a']} | {r['b']} | {pr['n']} | {rates} | {format_p(pr['p_value'])} | "
                     f"{diff(r.get('D'))} | {diff(r.get('S'))} |")
    return "\n".join(lines) + "\n"


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
    from eimsdk.bench.runner import read_results

    path = Path(path)
    summary_path = path / "summary.json" if path.is_dir() else path
    if not summary_path.is_file():
        raise InputError(f"{str(path)!r} is neither a benchmark output folder with summary.json nor a summary.json")
    summary = json.loads(summary_path.read_text())
    results_path = summary_path.parent / "results.jsonl"
    results = read_results(results_path) if results_path.is_file() else None
    return summary, results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eimsdk.bench.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="benchmark output folders or summary.json files")
    p.add_argument("--methods", nargs="+", help="only these method labels (default: all)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    runs = [load_run(run) for run in args.runs]
    rows = [row for summary, results in runs for row in comparison_rows(summary, results, args.methods)]
    pairs = model_pairs(runs, args.methods)
    print(comparison_markdown(rows), end="")
    if pairs:
        print("\nPaired tests between models (shared tasks; claim a difference only where p < 0.05):\n")
        print(pairs_markdown(pairs), end="")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "pairs": pairs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
