"""Why edits are not precise: per method, the precise edits, the missed ones (the target attribute is not read back)
and the leaky ones (it is, but another attribute changed), with the attributes that leaked most often.

    python benchmarks/imprecise_edits.py docs/results/issue11/results_toy2-sd3.jsonl.gz [--strength 1]

Reads the per-task results file an `eimsdk bench` run writes (`results.jsonl`, gzipped or not) and prints the
"Imprecise edits" table of docs/benchmark.md as Markdown rows, most precise method first.
"""
from __future__ import annotations

import argparse
import collections
from pathlib import Path

from eimsdk.bench.runner import read_results


def breakdown(path: Path, strength: float = 1.0) -> dict[str, dict]:
    """``{method: {"precise": n, "missed": n, "leaky": n, "leaked": Counter(attribute -> n)}}``."""
    rows: dict[str, dict] = collections.defaultdict(
        lambda: {"precise": 0, "missed": 0, "leaky": 0, "leaked": collections.Counter()})
    for item in read_results(path):
        for edit in item["edits"]:
            if edit["strength"] != strength:
                continue
            row = rows[item["method"]]
            if not edit["success"]:
                row["missed"] += 1
            elif edit["preserved_all"]:
                row["precise"] += 1
            else:
                row["leaky"] += 1
                row["leaked"].update(k for k, kept in edit["preserved"].items() if not kept)
    return dict(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="results.jsonl or results.jsonl.gz of an eimsdk bench run")
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--top", type=int, default=4, help="leaked attributes to name per method")
    args = ap.parse_args()
    rows = breakdown(args.results, args.strength)
    print("| method | precise | missed | leaky (which attribute) |")
    print("|---|---|---|---|")
    for method, r in sorted(rows.items(), key=lambda kv: -kv[1]["precise"]):
        top = ", ".join(f"{k} {n}" for k, n in r["leaked"].most_common(args.top))
        print(f"| {method} | {r['precise']} | {r['missed']} | {r['leaky']} ({top}) |")


if __name__ == "__main__":
    main()
