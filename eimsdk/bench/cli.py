"""``eimsdk bench``: run a benchmark manifest over models x methods (also under ``accelerate launch -m eimsdk``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from eimsdk.errors import InputError
from eimsdk.outputs import check_output_dir
from eimsdk.settings import parse_settings


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` command to the ``eimsdk`` CLI's subparsers."""
    p = subparsers.add_parser(
        "bench", help="run an editing benchmark: manifest x models x methods -> per-item JSON, report, plots",
        description="Run every manifest item with every model and method; results are written per item "
                    "atomically, so an interrupted run resumes. Under `accelerate launch -m eimsdk bench ...` items "
                    "are split across processes.")
    p.add_argument("manifest", nargs="?", help="JSONL manifest, PIE-Bench mapping_file.json (or its folder), or "
                   "a plugin's manifest source SOURCE[:ARGUMENT], e.g. toy:SCENES (`eimsdk plugins --kind manifest`)")
    p.add_argument("--models", nargs="+", help="model folders, hub ids or plugin model names (default toy-pixart)")
    p.add_argument("--methods", nargs="+", help="finder names, optionally NAME:key=value,... "
                   "(keys of the manipulator's config go to the manipulator, e.g. hsds:ablation=dz; default hsds)")
    p.add_argument("--strengths", nargs="+", type=float, help="edit strengths (default 1.0)")
    p.add_argument("--out", required=True, help="output folder (reused to resume)")
    p.add_argument("--reader", default="toy", help="attribute reader plugin (default toy; clip-probe for real images)")
    p.add_argument("--reader-set", action="append", metavar="KEY=VALUE", help="reader argument, e.g. model_path=DIR")
    p.add_argument("--manipulator", default="linear")
    p.add_argument("--manip-set", action="append", metavar="KEY=VALUE", help="manipulator setting for every method")
    p.add_argument("--device", default="cpu", help="cpu or cuda (each process takes cuda:LOCAL_RANK)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="model input size (default: each item's size, "
                   "else the model's own with the image's aspect ratio)")
    p.add_argument("--seed", type=int, default=0, help="added to every item's id-derived seed")
    p.add_argument("--limit", type=int, help="only the first N items")
    p.add_argument("--internal", type=int, default=0, metavar="N",
                   help="also compute the reader-free score on N sources edited along several attributes")
    p.add_argument("--metrics", nargs="+", help="edit metric names, optionally NAME:key=value,... (default psnr "
                   "ssim; e.g. clip-score:model_path=DIR; `eimsdk plugins --kind metric`)")
    p.add_argument("--no-images", action="store_true", help="do not save edited images (no example grids)")
    p.add_argument("--save-directions", action="store_true", help="save every direction (.safetensors + .json) in "
                   "its item's folder")
    p.add_argument("--manifest-only", action="store_true", help="write OUT/manifest.jsonl and stop")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from OUT's finished results "
                   "(of the run's models and methods, or of those given with --models/--methods, e.g. after copying the "
                   "units of another run with the same strengths into OUT/items)")
    p.add_argument("--no-progress", action="store_true")
    return p


def run_bench(args: argparse.Namespace) -> int:
    """Handler of ``eimsdk bench``."""
    from eimsdk.bench.manifest import load_manifest, resolve_manifest, write_manifest
    from eimsdk.bench.runner import BenchConfig, Runner

    out = check_output_dir(args.out)
    if args.report_only:
        if not (out / "config.json").is_file():
            raise InputError(f"--out {str(out)!r} has no config.json; run the benchmark there first")
        from eimsdk.bench.report import write_report
        from eimsdk.bench.runner import collect_results

        from eimsdk.bench.runner import OutputLock

        given = {"models": args.models, "methods": args.methods}  # strengths are part of each unit's key
        try:
            stored = json.loads((out / "config.json").read_text())
            config = BenchConfig.model_validate({**stored, **{k: v for k, v in given.items() if v is not None}})
        except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            raise InputError(f"--out {str(out)!r}: config.json cannot be used ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0]}); run the benchmark there again") from None
        with OutputLock(out):
            results = collect_results(out, load_manifest(out / "manifest.jsonl"), config)
            internal = json.loads((out / "internal.json").read_text()) if (out / "internal.json").is_file() else None
            write_report(out, results, config, internal=internal)
        print(f"wrote {out / 'report.md'}")
        return 0
    if not args.manifest:
        raise InputError("give a MANIFEST (a .jsonl file, a PIE-Bench mapping_file.json, or 'toy')")
    items = resolve_manifest(args.manifest, out / "manifest")
    if args.limit is not None:
        if args.limit < 1:
            raise InputError(f"--limit must be a positive number of items, got {args.limit}")
        items = items[: args.limit]
    if args.manifest_only:
        print(f"wrote {write_manifest(items, out / 'manifest.jsonl')} ({len(items)} items)")
        return 0
    config = dict(
        models=args.models or ["toy-pixart"], methods=args.methods or ["hsds"], strengths=args.strengths or [1.0],
        reader=args.reader,
        reader_config=parse_settings(args.reader_set, "--reader-set"), manipulator=args.manipulator,
        manipulator_config=parse_settings(args.manip_set, "--manip-set"), device=args.device, dtype=args.dtype,
        size=tuple(args.size) if args.size else None, seed=args.seed, internal=args.internal,
        save_images=not args.no_images, save_directions=args.save_directions,
        **({"metrics": args.metrics} if args.metrics else {}),
    )
    runner = Runner(items, config, out, progress=not args.no_progress)
    summary = runner.run()
    if summary is not None:
        ref = f"{summary['reference_strength']:g}"
        for model, methods in summary["table"].items():
            for method, e in methods.items():
                r = e["by_strength"].get(ref, {})
                d = e.get("disentanglement", {}).get("overall")
                print(f"{model:>16} {method:<24} success {r.get('success')}  preserved {r.get('preserved')}  "
                      f"precise {r.get('precise')}  D {d}")
        print(f"wrote {out / 'report.md'}, {out / 'summary.json'}, {out / 'results.jsonl'}")
    return 0
