"""Write a stored benchmark results file back as finished units, so `eimsdk bench --report-only` can merge them.

    python benchmarks/restore_units.py docs/results/issue11/results_toy2-pixart.jsonl.gz OUT [--methods dds text]

A stored `results.jsonl(.gz)` holds every unit's record, key included; `eimsdk bench` keeps a unit whose key
matches the run's (same item, image bytes, model, method and result settings), so units written back into a run
folder of the same manifest and settings count as finished there: a new method is compared with stored ones on the
same tasks without running them again. Units whose folder already holds a finished JSON are left alone, and the
images of a restored unit are not restored (the report's example grid says so).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from eimsdk.bench.runner import parse_method, read_results, result_path, write_result


def restore(results: Path, out: Path, methods: list[str] | None = None) -> dict[str, int]:
    """Write each record (of ``methods``, default all) to ``OUT/items/MODEL/METHOD/ID.json``; count per method."""
    written: dict[str, int] = {}
    for record in read_results(results):
        if methods and record["method"] not in methods:
            continue
        path = result_path(out, record["model"], parse_method(record["method"]), record["id"])
        if path.exists():
            continue
        write_result(path, record)
        written[record["method"]] = written.get(record["method"], 0) + 1
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, help="a results.jsonl or results.jsonl.gz an `eimsdk bench` run wrote")
    p.add_argument("out", type=Path, help="the run folder (its --out) to write the units into")
    p.add_argument("--methods", nargs="+", help="only these method labels (default: every method in the file)")
    args = p.parse_args(argv)
    if not args.results.is_file():
        p.error(f"results file {str(args.results)!r} does not exist; pass an `eimsdk bench` results.jsonl(.gz)")
    if not (args.out / "config.json").is_file():
        p.error(f"{str(args.out)!r} has no config.json; run `eimsdk bench ... --out {args.out}` there first")
    written = restore(args.results, args.out, args.methods)
    for method, n in written.items():
        print(f"{method}: {n} unit(s) written")
    if not written:
        print("nothing written (no such method in the file, or every unit is already there)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
