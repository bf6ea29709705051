"""One command that trains and checks the toy world-2 models on a GPU, ready to ship.

Usage::

    python -m eimsdk_toy.recipe --out DIR --device cuda [--vae-minutes 1.5] [--minutes 3.5] [--pause-minutes M]

1. the shared world-2 VAE (``DIR/vae``), then its round trip read back by the ``toy2`` reader
   (``DIR/vae_roundtrip.json``: every attribute, named and unnamed);
2. toy PixArt, SD3 and Flux side by side (one process each, ``--max-minutes`` each) into ``DIR/<family>``;
3. ``eimsdk_toy.evaluate`` on each (``DIR/<family>/evaluation.json``): sampling per named attribute and all at
   once, inversion round trip, unnamed-content statistics against the training scenes;
4. one archive per model, ``DIR/archives/toy2-<family>.tar.gz``, each checked to be under 16 MiB.

A stage whose output exists is skipped, so a run cut short resumes where it stopped; a family paused at a
checkpoint (``--pause-minutes``, e.g. to fit a per-call time limit) continues from it on the next run. With a
world-2 VAE shipped in ``eimsdk_toy/weights/toy2/vae`` and none in ``DIR/vae``, the recipe copies the shipped one
there instead of training one (its round trip is still measured). ``--train-args`` and
``--eval-args`` pass options through (the smoke test: ``--train-args "--steps 3 --batch-size 2 --pool 64"``).
``DIR/recipe.json`` gathers the numbers; the summary is printed as Markdown.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from eimsdk.errors import EimsdkError
from eimsdk_toy.models import FAMILIES
from eimsdk_toy.train import checkpoint_path
from eimsdk_toy.worlds import get_world

ARCHIVE_LIMIT = 16 * 2**20  # bytes per model archive
DEFAULT_FAMILIES = ("pixart", "sd3", "flux")  # the toy UNet trains too with --families ... unet


class RecipePaused(EimsdkError):
    """Some family stopped at its ``--pause-minutes`` checkpoint; the same command continues it."""


def _run_all(commands: dict[str, list[str]], logs: Path) -> None:
    """Run the commands side by side (one log file each); raise naming every one that failed."""
    logs.mkdir(parents=True, exist_ok=True)
    running = {}
    for name, command in commands.items():
        log = (logs / f"{name}.log").open("w")
        running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log)
    failed = []
    for name, (process, log) in running.items():
        if process.wait() != 0:
            failed.append(f"{name} (exit {process.returncode}, log {logs / f'{name}.log'})")
        log.close()
    if failed:
        raise EimsdkError(f"recipe step failed: {', '.join(failed)}")


def vae_roundtrip(folder: Path, n: int, device: str) -> dict[str, Any]:
    """The world-2 readers on ``n`` scenes after the VAE's encode -> decode (the ceiling of every model)."""
    from types import SimpleNamespace

    import torch
    from diffusers import AutoencoderKL

    from eimsdk_toy.evaluate import evaluate_vae

    vae = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32).to(device)
    return evaluate_vae(SimpleNamespace(vae=vae), "vae", n, device=device, world=2)  # it only reads pipe.vae


def trained(out: Path, family: str) -> bool:
    """Whether ``out/family`` holds a finished model (not one saved at a pause, whose checkpoint remains)."""
    return (out / family / "model_index.json").is_file() and not checkpoint_path(out, family).is_file()


def archive(folder: Path, path: Path) -> int:
    """``folder`` as a gzipped tar at ``path``; its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return path.stat().st_size


def run_recipe(out: Path, *, device: str = "cuda", vae_minutes: float = 1.5, minutes: float = 3.5,
               families: tuple[str, ...] = DEFAULT_FAMILIES, train_args: str = "", eval_args: str = "",
               roundtrip_n: int = 1000, pause_minutes: float = 0.0) -> dict[str, Any]:
    """Every stage in order (see the module docstring); returns what ``recipe.json`` holds."""
    out = Path(out)
    python = [sys.executable, "-m"]
    common = ["--world", "2", "--out", str(out), "--device", device, *shlex.split(train_args)]
    summary: dict[str, Any] = {"device": device, "seconds": {}}
    start = time.perf_counter()
    vae_dir, shipped = out / "vae", get_world(2).weights / "vae"
    if not (vae_dir / "config.json").is_file():
        if (shipped / "config.json").is_file():
            shutil.copytree(shipped, vae_dir)  # every stage then reads DIR/vae, as if trained here
            summary["vae_source"] = str(shipped)
        else:
            _run_all({"vae": [*python, "eimsdk_toy.train", "--family", "vae", "--max-minutes", str(vae_minutes),
                              *common]}, out / "logs")
    summary["seconds"]["vae"] = round(time.perf_counter() - start, 1)
    summary["vae_roundtrip"] = vae_roundtrip(vae_dir, roundtrip_n, device)
    (out / "vae_roundtrip.json").write_text(json.dumps(summary["vae_roundtrip"], indent=2) + "\n")

    start = time.perf_counter()
    todo = [f for f in families if not trained(out, f)]
    pause = ["--pause-minutes", str(pause_minutes)] if pause_minutes else []
    _run_all({f: [*python, "eimsdk_toy.train", "--family", f, "--max-minutes", str(minutes), "--resume", *pause,
                  *common] for f in todo}, out / "logs")
    summary["seconds"]["families"] = round(time.perf_counter() - start, 1)
    paused = [f for f in families if not trained(out, f)]
    if paused:
        raise RecipePaused(f"paused at a checkpoint: {', '.join(paused)} (in {out / 'checkpoints'}); "
                           "run the same command again to continue")

    start = time.perf_counter()
    todo = [f for f in families if not (out / f / "evaluation.json").is_file()]
    _run_all({f"evaluate-{f}": [*python, "eimsdk_toy.evaluate", "--model", str(out / f), "--device", device,
                                "--json", str(out / f / "evaluation.json"), *shlex.split(eval_args)]
              for f in todo}, out / "logs")
    summary["seconds"]["evaluate"] = round(time.perf_counter() - start, 1)

    summary["models"] = {}
    for f in families:
        size = archive(out / f, out / "archives" / f"toy2-{f}.tar.gz")
        if size >= ARCHIVE_LIMIT:
            raise EimsdkError(f"the toy2-{f} archive is {size / 2**20:.1f} MiB, over the 16 MiB limit")
        summary["models"][f] = {"archive_bytes": size,
                                "training": json.loads((out / f / "training.json").read_text()),
                                "evaluation": json.loads((out / f / "evaluation.json").read_text())}
    (out / "recipe.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def markdown(summary: dict[str, Any]) -> str:
    """The recipe's numbers: VAE ceiling, then per model its steps, archive size and evaluation."""
    from eimsdk_toy.evaluate import markdown as evaluation_markdown

    vae = summary["vae_roundtrip"]
    worst = min(vae["attributes"], key=vae["attributes"].get)
    lines = [f"VAE round trip ({vae['n']} scenes): all attributes {100 * vae['all']:.1f}%, worst {worst} "
             f"{100 * vae['attributes'][worst]:.1f}%", ""]
    for family, model in summary["models"].items():
        lines += [f"toy2-{family}: {model['training']['steps']} steps x {model['training']['batch_size']}, "
                  f"{model['training']['seconds']} s, archive {model['archive_bytes'] / 2**20:.2f} MiB", "",
                  evaluation_markdown(model["evaluation"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eimsdk_toy.recipe", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="root folder: OUT/vae, OUT/<family>, OUT/archives, OUT/recipe.json")
    p.add_argument("--device", default="cuda")
    p.add_argument("--vae-minutes", type=float, default=1.5, help="wall-clock budget of the VAE")
    p.add_argument("--minutes", type=float, default=3.5, help="wall-clock budget of each family (side by side)")
    p.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES), choices=list(FAMILIES))
    p.add_argument("--train-args", default="", help="extra options for eimsdk_toy.train, one string")
    p.add_argument("--eval-args", default="", help="extra options for eimsdk_toy.evaluate, one string")
    p.add_argument("--roundtrip-n", type=int, default=1000, help="scenes for the VAE round-trip check")
    p.add_argument("--pause-minutes", type=float, default=0.0, help="stop each family's training after this "
                   "long at a checkpoint (to fit a per-call limit); run the command again to continue")
    args = p.parse_args(argv)
    try:
        summary = run_recipe(Path(args.out), device=args.device, vae_minutes=args.vae_minutes, minutes=args.minutes,
                             families=tuple(args.families), train_args=args.train_args,
                             eval_args=args.eval_args, roundtrip_n=args.roundtrip_n, pause_minutes=args.pause_minutes)
    except RecipePaused as paused:
        print(paused)
        return 0
    except EimsdkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
