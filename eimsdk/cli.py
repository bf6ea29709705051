"""The ``eimsdk`` command line. Imports stay lazy: ``--help`` and ``plugins`` never import torch."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from eimsdk.hookspecs import KINDS

from eimsdk.bench.cli import add_bench_parser, parse_settings, run_bench

DEFAULT_MODEL = "toy-pixart"


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help=f"diffusers folder, hub id, or a plugin model name (default: {DEFAULT_MODEL}, no download)")
    p.add_argument("--backend", help="backend name (default: from model_index.json)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, mps)")
    p.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16")


def _edit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="source image file")
    p.add_argument("--prompt", required=True, help="prompt that describes the source image")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="model input size (default: image size "
                   "rounded to the model's multiple)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eimsdk", description="Fine-grained text-guided image editing with "
                                     "diffusion transformers (Encode - Identify - Manipulate).")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("plugins", help="list installed plugins, what each provides, and what failed")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--kind", choices=list(KINDS), help="list components of one kind")
    p.add_argument("--filter", help="only component names containing this text")

    p = sub.add_parser("generate", help="text-to-image (equal to the family's diffusers pipeline)")
    _model_args(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.5)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output image path (.png)")

    p = sub.add_parser("edit", help="edit an image: find a direction and apply it")
    _model_args(p)
    _edit_args(p)
    p.add_argument("--target", required=True, help="prompt that describes the wanted image")
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--method", default="hsds", help="direction finder (eimsdk plugins --kind finder)")
    p.add_argument("--preserve", action="append", default=[], help="prompt whose content must not change")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="finder config override")
    p.add_argument("--restore-size", action="store_true", help="resize the output back to the input size")
    p.add_argument("--out", required=True, help="output image path (.png); the direction is saved beside it")

    p = sub.add_parser("direction", help="find, apply or sweep directions saved as files")
    dsub = p.add_subparsers(dest="direction_command", metavar="ACTION")
    q = dsub.add_parser("find", help="find a direction and save it (.safetensors + .json)")
    _model_args(q)
    _edit_args(q)
    q.add_argument("--target", required=True, action="append", help="target prompt (repeat with --prompt "
                   "to average several pairs)")
    q.add_argument("--method", default="hsds")
    q.add_argument("--preserve", action="append", default=[])
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--set", action="append", metavar="KEY=VALUE")
    q.add_argument("--out", required=True, help="direction file (.safetensors)")
    q = dsub.add_parser("apply", help="apply saved direction(s) to an image")
    _model_args(q)
    _edit_args(q)
    q.add_argument("--direction", required=True, action="append", help="direction file (repeat to compose)")
    q.add_argument("--strength", type=float, action="append", help="one per --direction (default 1.0)")
    q.add_argument("--restore-size", action="store_true")
    q.add_argument("--out", required=True)
    q = dsub.add_parser("sweep", help="PNG grid: source, then edits at several strengths; a row per direction")
    _model_args(q)
    _edit_args(q)
    q.add_argument("--direction", required=True, action="append")
    q.add_argument("--strengths", default="-1,-0.5,0,0.5,1", help="comma-separated strengths")
    q.add_argument("--out", required=True, help="grid image (.png)")

    add_bench_parser(sub)
    _add_plugin_commands(sub)
    return parser


def _add_plugin_commands(sub: Any) -> None:
    """Subcommands registered by plugins (``register_commands``); a name the core uses, or a broken one, is skipped."""
    from eimsdk.errors import PluginError
    from eimsdk.plugins import get_plugin_manager

    for comp in get_plugin_manager().list("command"):
        try:
            if comp.name in sub.choices:
                raise PluginError(f"plugin {comp.plugin!r} registers it, but the name is taken")
            configure = comp.load()
        except PluginError as exc:
            print(f"eimsdk: command {comp.name!r} is skipped: {exc}", file=sys.stderr)
            continue
        p = sub.add_parser(comp.name, help=comp.description, description=comp.description)
        p.set_defaults(handler=configure(p))


# ------------------------------------------------------------------------------------------------ commands
def cmd_plugins(args: argparse.Namespace) -> int:
    from eimsdk.plugins import get_plugin_manager

    pm = get_plugin_manager()
    if args.kind or args.filter:
        comps = pm.list(args.kind, args.filter)
        rows = [{"kind": c.kind, "name": c.name, "plugin": c.plugin, "target": str(c.target),
                 "description": c.description, **({"pipeline_classes": list(c.extra["pipeline_classes"])}
                                                  if "pipeline_classes" in c.extra else {})} for c in comps]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            _table(rows, ["kind", "name", "plugin", "description"])
        return 0
    report = pm.report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    rows = []
    for r in report:
        provides = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(r["provides"].items())) or "-"
        rows.append({"plugin": r["name"], "version": r["version"] or "-", "status": r["status"],
                     "provides": provides if r["status"] == "ok" else (r["error"] or "-")})
    _table(rows, ["plugin", "version", "status", "provides"])
    failed = [r for r in report if r["status"] == "failed"]
    if failed:
        print(f"\n{len(failed)} plugin(s) failed to load; the others work. Set EIMSDK_PLUGINS_BLOCK=name to hide one.",
              file=sys.stderr)
    return 0


def _table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    width = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.upper().ljust(width[c]) for c in cols).rstrip())
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(width[c]) for c in cols).rstrip())


def _editor(args: argparse.Namespace):
    from eimsdk.editor import Editor
    from eimsdk.images import load_image

    if getattr(args, "image", None):  # fail on a bad image before spending seconds loading the model
        load_image(args.image, name="image")

    return Editor.from_pretrained(args.model, backend=args.backend, device=args.device, dtype=args.dtype)


def _print_cost(label: str, cost: Any) -> None:
    if cost is not None:
        d = cost.as_dict()
        print(f"{label}: {d['model_evals']} model evals, {d['seconds']} s, peak {d['peak_memory_mb']} MB "
              f"({d['memory_kind']})")


def cmd_generate(args: argparse.Namespace) -> int:
    from eimsdk.records import save_image

    editor = _editor(args)
    images = editor.generate(args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance,
                             height=args.height, width=args.width, seed=args.seed,
                             negative_prompt=args.negative_prompt, progress=True)
    print(f"wrote {save_image(images[0], args.out)}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from eimsdk.records import save_image

    editor = _editor(args)
    result = editor.edit(args.image, args.prompt, args.target, args.strength, method=args.method, seed=args.seed,
                         preserve_prompts=args.preserve, size=tuple(args.size) if args.size else None,
                         restore_size=args.restore_size, finder_config=parse_settings(args.set, "--set"))
    out = save_image(result.image, args.out)
    print(f"wrote {out}")
    if result.direction is not None:
        print(f"wrote {result.direction.save(Path(args.out).with_suffix('.direction.safetensors'))}")
    _print_cost("find", result.find_cost)
    _print_cost("apply", result.cost)
    return 0


def cmd_direction(args: argparse.Namespace) -> int:
    from eimsdk.records import Direction, save_image

    if args.direction_command is None:
        raise SystemExit("eimsdk: error: choose an action: find, apply or sweep (eimsdk direction --help)")
    editor = _editor(args)
    size = tuple(args.size) if args.size else None
    if args.direction_command == "find":
        prompts = [args.prompt] * len(args.target)
        d = editor.find_direction(args.image, prompts, args.target, method=args.method,
                                  preserve_prompts=args.preserve, seed=args.seed, size=size, **parse_settings(args.set, "--set"))
        print(f"wrote {d.save(args.out)}")
        if "cost" in d.meta:
            c = d.meta["cost"]
            print(f"find: {c.get('model_evals')} model evals, {c.get('seconds')} s")
        return 0
    directions = [Direction.load(p, device=editor.encoder.device) for p in args.direction]
    if args.direction_command == "apply":
        strengths = args.strength or [1.0] * len(directions)
        if len(strengths) != len(directions):
            raise SystemExit(f"eimsdk: error: got {len(strengths)} --strength for {len(directions)} --direction")
        result = editor.apply(args.image, args.prompt, list(zip(directions, strengths)), size=size,
                              restore_size=args.restore_size)
        print(f"wrote {save_image(result.image, args.out)}")
        _print_cost("apply", result.cost)
        return 0
    strengths = [float(s) for s in args.strengths.split(",") if s.strip()]
    named = {Path(p).stem: d for p, d in zip(args.direction, directions)}
    grid, _ = editor.sweep(args.image, args.prompt, named, strengths, size=size, progress=True)
    print(f"wrote {save_image(grid, args.out)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from eimsdk import __version__

        print(f"eimsdk {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    handlers = {"plugins": cmd_plugins, "generate": cmd_generate, "edit": cmd_edit, "direction": cmd_direction,
                "bench": run_bench}
    from eimsdk.errors import EimsdkError

    try:
        return int((handlers.get(args.command) or args.handler)(args) or 0)
    except EimsdkError as exc:
        print(f"eimsdk: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eimsdk: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
