"""The ``eimsdk`` command line. Imports stay lazy: ``--help`` and ``plugins`` never import torch."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from eimsdk.hookspecs import KINDS

from eimsdk.bench.cli import add_bench_parser, run_bench

DEFAULT_MODEL = "toy-pixart"
#: Commands that only list or print; every other command runs a model and gets a thread count (eimsdk.threads).
LISTING_COMMANDS = ("plugins",)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``eimsdk edit: error: ...``) and exit status 2, as docs/cli.md says."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _seed(text: str) -> int:
    """argparse type of ``--seed``: an integer in the range :func:`eimsdk.settings.check_seed` accepts."""
    from eimsdk.errors import InputError
    from eimsdk.settings import check_seed

    try:
        return check_seed(int(text), "--seed")
    except (ValueError, InputError) as exc:
        message = str(exc) if isinstance(exc, InputError) else f"--seed={text!r} is not an integer"
        raise argparse.ArgumentTypeError(message) from None


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help=f"diffusers folder, hub id, or a plugin model name (default: {DEFAULT_MODEL}, no download)")
    p.add_argument("--backend", help="backend name (default: from model_index.json)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, mps)")
    p.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16")


def _edit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="source image file")
    p.add_argument("--prompt", required=True, help="prompt that describes the source image")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="model input size (default: the model's own "
                   "size, the image's aspect ratio kept; a larger size costs memory with its square)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="eimsdk", description="Fine-grained text-guided image editing with "
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
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--out", required=True, help="output image path (.png)")

    p = sub.add_parser("edit", help="edit an image: find a direction and apply it")
    _model_args(p)
    _edit_args(p)
    p.add_argument("--target", required=True, help="prompt that describes the wanted image")
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--method", default="hsds", help="direction finder (eimsdk plugins --kind finder)")
    p.add_argument("--preserve", action="append", default=[], help="prompt whose content must not change")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="finder or manipulator setting (by name, "
                   "e.g. lam=0.1 for hsds, t_edit=0.6 for the manipulator)")
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
    q.add_argument("--seed", type=_seed, default=0)
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

    try:
        commands = get_plugin_manager().list("command")
    except PluginError:  # strict mode and a broken plugin: the command that runs reports it, in one line
        return
    for comp in commands:
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


def _editor(args: argparse.Namespace, outputs: Sequence[tuple[str, bool]] = ()):
    """Check the inputs and the ``(output path, is an image)`` pairs, then load the model."""
    from eimsdk.editor import Editor
    from eimsdk.images import load_image
    from eimsdk.outputs import check_output_file
    from eimsdk.settings import check_device

    inputs = [args.image] if getattr(args, "image", None) else []
    inputs += list(getattr(args, "direction", None) or [])
    if getattr(args, "image", None):  # fail on a bad image before spending seconds loading the model
        load_image(args.image, name="--image")
    for path, image in outputs:
        check_output_file(path, name="--out", inputs=inputs, image=image)
    check_device(args.device, "--device")
    return Editor.from_pretrained(args.model, backend=args.backend, device=args.device, dtype=args.dtype)


def _print_cost(label: str, cost: Any) -> None:
    if cost is not None:
        d = cost.as_dict()
        print(f"{label}: {d['model_evals']} model evals, {d['seconds']} s, peak {d['peak_memory_mb']} MB "
              f"({d['memory_kind']})")


def cmd_generate(args: argparse.Namespace) -> int:
    from eimsdk.records import save_image

    editor = _editor(args, [(args.out, True)])
    images = editor.generate(args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance,
                             height=args.height, width=args.width, seed=args.seed,
                             negative_prompt=args.negative_prompt, progress=True)
    print(f"wrote {save_image(images[0], args.out)}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from eimsdk.outputs import check_output_file
    from eimsdk.records import save_image
    from eimsdk.settings import check_strength

    finder_config, manipulator_config = _settings(args.set, args.method)
    strength = check_strength(args.strength, "--strength", warn=False)
    direction_out = check_output_file(args.out, image=True).with_suffix(".direction.safetensors")
    editor = _editor(args, [(args.out, True), (str(direction_out), False),
                            (str(direction_out.with_suffix(".json")), False)])
    result = editor.edit(args.image, args.prompt, args.target, strength, method=args.method, seed=args.seed,
                         preserve_prompts=args.preserve, size=tuple(args.size) if args.size else None,
                         restore_size=args.restore_size, finder_config=finder_config, **manipulator_config)
    out = save_image(result.image, args.out)
    print(f"wrote {out}")
    if result.direction is not None:
        print(f"wrote {result.direction.save(direction_out)}")
    _print_cost("find", result.find_cost)
    _print_cost("apply", result.cost)
    return 0


def _settings(items: Sequence[str] | None, method: str, *, with_manipulator: bool = True
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set`` items routed to the finder ``method`` and the linear manipulator, validated before any model loads."""
    from eimsdk.plugins import get_plugin_manager
    from eimsdk.settings import make_component, parse_settings, route_settings

    pm = get_plugin_manager()
    finder_cls = pm.load("finder", method)
    manipulator_cls = pm.load("manipulator", "linear") if with_manipulator else None
    finder_config, manipulator_config = route_settings(parse_settings(items), finder_cls, manipulator_cls,
                                                       finder=method, manipulator="linear")
    make_component(finder_cls, finder_config, f"finder {method!r}")
    if manipulator_cls is not None:
        make_component(manipulator_cls, manipulator_config, "manipulator 'linear'")
    return finder_config, manipulator_config


def cmd_direction(args: argparse.Namespace) -> int:
    from eimsdk.errors import InputError
    from eimsdk.outputs import check_output_file
    from eimsdk.records import Direction, save_image
    from eimsdk.settings import check_strength, parse_strengths

    if args.direction_command is None:
        raise InputError("choose an action: find, apply or sweep (eimsdk direction --help)")
    size = tuple(args.size) if args.size else None
    if args.direction_command == "find":
        finder_config, _ = _settings(args.set, args.method, with_manipulator=False)
        out = check_output_file(args.out).with_suffix(".safetensors")
        editor = _editor(args, [(str(out), False), (str(out.with_suffix(".json")), False)])
        prompts = [args.prompt] * len(args.target)
        d = editor.find_direction(args.image, prompts, args.target, method=args.method,
                                  preserve_prompts=args.preserve, seed=args.seed, size=size, **finder_config)
        print(f"wrote {d.save(args.out)}")
        if "cost" in d.meta:
            c = d.meta["cost"]
            print(f"find: {c.get('model_evals')} model evals, {c.get('seconds')} s")
        return 0
    if args.direction_command == "apply":
        strengths = [check_strength(s, "--strength", warn=False) for s in args.strength or [1.0] * len(args.direction)]
        if len(strengths) != len(args.direction):
            raise InputError(f"got {len(strengths)} --strength for {len(args.direction)} --direction; give one each")
    else:
        strengths = parse_strengths(args.strengths)
    directions = [Direction.load(p) for p in args.direction]
    editor = _editor(args, [(args.out, True)])
    directions = [d.to(editor.encoder.device) for d in directions]
    if args.direction_command == "apply":
        result = editor.apply(args.image, args.prompt, list(zip(directions, strengths)), size=size,
                              restore_size=args.restore_size)
        print(f"wrote {save_image(result.image, args.out)}")
        _print_cost("apply", result.cost)
        return 0
    named = {Path(p).stem: d for p, d in zip(args.direction, directions)}
    grid, _ = editor.sweep(args.image, args.prompt, named, strengths, size=size, progress=True)
    print(f"wrote {save_image(grid, args.out)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; warnings, from plugin discovery on, print as one line each (``eimsdk: warning: ...``)."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run(argv)


def _run(argv: Sequence[str] | None) -> int:
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
        if args.command not in LISTING_COMMANDS:
            from eimsdk.threads import apply_num_threads

            apply_num_threads()
        return int((handlers.get(args.command) or args.handler)(args) or 0)
    except EimsdkError as exc:
        print(f"eimsdk: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eimsdk: interrupted", file=sys.stderr)
        return 130


def _show_warning(message: Warning | str, category: type, *args: Any, **kwargs: Any) -> None:
    """Warnings as one line each on stderr, like errors."""
    print(f"eimsdk: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
