"""Cost-quality frontier: precise-edit rate against model evaluations per edit, per model family and method.

Reads the ``summary.json`` of one or more ``eimsdk bench`` runs and writes a plot (one panel per model, one point
per method with its 95% Wilson interval, the Pareto frontier drawn through the undominated methods) and a Markdown
table. Cost per edit = finding the direction + applying it once (forward equivalents, as counted by the Encoder).

    python benchmarks/frontier.py RUN/summary.json [RUN2/summary.json ...] --out docs/results/frontier
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def frontier_points(summaries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """model -> one point per method: evaluations per edit, precise rate and interval, PSNR outside the region."""
    points: dict[str, list[dict[str, Any]]] = {}
    for summary in summaries:
        ref = f"{summary['reference_strength']:g}"
        for model, methods in summary["table"].items():
            for method, entry in methods.items():
                row = entry["by_strength"].get(ref, {})
                if row.get("precise") is None:
                    continue
                evals = (entry.get("find_model_evals") or 0.0) + (row.get("apply_model_evals") or 0.0)
                points.setdefault(model, []).append({
                    "method": method, "evals": evals, "precise": row["precise"], "ci": row.get("precise_ci"),
                    "psnr_outside": row.get("metrics", row).get("psnr_outside"), "n": entry["n"]})
    for pts in points.values():
        pts.sort(key=lambda p: (p["evals"], -p["precise"]))
        best = -1.0
        for p in pts:  # undominated: no cheaper-or-equal method is at least as precise
            p["frontier"] = p["precise"] > best
            best = max(best, p["precise"])
    return points


def markdown_table(points: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| model | method | evaluations per edit | precise [95% CI] | PSNR outside | on the frontier |",
             "|---|---|---|---|---|---|"]
    for model, pts in points.items():
        for p in pts:
            ci = f" [{p['ci'][0]:.2f}, {p['ci'][1]:.2f}]" if p["ci"] else ""
            psnr = "-" if p["psnr_outside"] is None else f"{p['psnr_outside']:.1f}"
            lines.append(f"| {model} | {p['method']} | {p['evals']:.0f} | {p['precise']:.2f}{ci} | {psnr} | "
                         f"{'yes' if p['frontier'] else ''} |")
    return "\n".join(lines) + "\n"


def plot(points: dict[str, list[dict[str, Any]]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(points), 4.4))
    axes = fig.subplots(1, len(points), squeeze=False)[0]
    for ax, (model, pts) in zip(axes, points.items()):
        for p in pts:
            lo, hi = p["ci"] or (p["precise"], p["precise"])
            ax.errorbar(max(p["evals"], 1.0), p["precise"], yerr=[[p["precise"] - lo], [hi - p["precise"]]],
                        fmt="o", capsize=3, label=p["method"])
        front = [p for p in pts if p["frontier"]]
        ax.step([max(p["evals"], 1.0) for p in front], [p["precise"] for p in front], where="post", color="grey",
                alpha=0.6, linestyle="--")
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_xlabel("model evaluations per edit (find + apply)")
        ax.set_ylabel("precise edits")
        ax.set_title(model, fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summaries", nargs="+", help="summary.json files of eimsdk bench runs")
    parser.add_argument("--out", required=True, help="output stem: writes STEM.png and STEM.md")
    args = parser.parse_args()
    points = frontier_points([json.loads(Path(p).read_text()) for p in args.summaries])
    out = Path(args.out)
    plot(points, out.with_suffix(".png"))
    out.with_suffix(".md").write_text(markdown_table(points))
    print(markdown_table(points))


if __name__ == "__main__":
    main()
