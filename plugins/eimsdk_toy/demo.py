"""``eimsdk demo``: the embedded default. Edit a toy scene's colour with HSDS, measure it, write a grid and a report.

Everything runs on the toy model that ships with the package (no download): render a scene, find a direction
for red -> blue with HSDS (and the text-only baseline for comparison), apply both at several strengths, read every
edit back with the exact readers, and write ``grid.png``, ``report.json`` and the direction to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

STRENGTHS = (0.0, 0.5, 1.0, 1.5)
METHODS = ("hsds", "text")


def demo_command(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """``eimsdk demo``: its arguments, and the handler that runs it."""
    parser.add_argument("--out", default="eimsdk-demo", help="output folder")
    parser.add_argument("--family", default="pixart", choices=["pixart", "sd3", "flux"])
    parser.add_argument("--seed", type=int, default=0)
    return lambda args: run_demo(out=args.out, family=args.family, seed=args.seed)


def run_demo(out: str | Path = "eimsdk-demo", family: str = "pixart", seed: int = 0,
             source: str = "red", target: str = "blue") -> int:
    """Run the demo; returns a process exit code (0)."""
    from eimsdk import Editor
    from eimsdk.outputs import check_output_dir
    from eimsdk.records import atomic_write_text, save_image
    from eimsdk_toy import make_scene
    from eimsdk_toy.readers import ToyReader
    from eimsdk_toy.scenes import caption

    t0 = time.perf_counter()
    out = check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    editor = Editor.from_pretrained(f"toy-{family}")
    scene = make_scene(seed, colour=source)
    src_prompt = scene.caption
    tgt_prompt = caption(scene.spec.model_copy(update={"colour": target}))
    print(f"source: {src_prompt!r}\ntarget: {tgt_prompt!r}")
    save_image(scene.image, out / "source.png")

    reader = ToyReader()
    directions, report = {}, {"model": f"toy-{family}", "seed": seed, "source_prompt": src_prompt,
                              "target_prompt": tgt_prompt, "source_attributes": scene.attributes, "methods": {}}
    for method in METHODS:
        d = editor.find_direction(scene.image, src_prompt, tgt_prompt, method=method, seed=seed)
        d.meta["name"] = f"{method}: {source}->{target}"
        directions[d.meta["name"]] = d
        if method == "hsds":
            d.save(out / "direction.safetensors")
        report["methods"][method] = {"find_cost": d.meta.get("cost"), "edits": []}
    grid, results = editor.sweep(scene.image, src_prompt, directions, STRENGTHS, progress=True)
    save_image(grid, out / "grid.png")

    for (name, d), method in zip(directions.items(), METHODS):
        for strength, res in zip(STRENGTHS, results[name]):
            got = reader.read([res.image])[0]
            others = [k for k in scene.attributes if k != "colour"]
            report["methods"][method]["edits"].append({
                "strength": strength, "read": got, "target_reached": got["colour"] == target,
                "others_preserved": all(got[k] == scene.attributes[k] for k in others),
                "cost": res.cost.as_dict(),
            })
    report["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))

    print(f"\n{'method':<6} {'strength':>8}  {'colour':<8} {'others kept':<11} {'evals':>6}")
    for method, r in report["methods"].items():
        for e in r["edits"]:
            print(f"{method:<6} {e['strength']:>8.2f}  {e['read']['colour']:<8} {str(e['others_preserved']):<11} "
                  f"{e['cost']['model_evals']:>6.0f}")
    print(f"\nwrote {out / 'grid.png'} (rows: {', '.join(directions)}; columns: source, strengths {list(STRENGTHS)})")
    print(f"wrote {out / 'report.json'} and {out / 'direction.safetensors'}  ({report['seconds']} s)")
    return 0
