"""Cost of JVPs and VJPs of eps_hat as multiples of one forward, per tiny backend, and the alternatives we rejected.

    HF_HUB_OFFLINE=1 python benchmarks/autodiff_cost.py [--batch 4] [--repeats 9] [--families pixart sd3 flux]
        [--with-linearize] [--device cuda] [--json out.json]
    HF_HUB_OFFLINE=1 python benchmarks/autodiff_cost.py --accuracy
    HF_HUB_OFFLINE=1 python benchmarks/autodiff_cost.py --toy-paired 8

Measured, at one point (z_t, t, c) of batch B, median wall time over repeats:

- ``forward``: ``predict_eps`` without gradient (default attention kernel), the unit;
- ``graph forward``: the forward of :class:`eimsdk.autodiff.Linearization` (graph kept, MATH kernel);
- ``dual build``: its first VJP, which also builds ``g(d) = J^T d`` with ``create_graph``;
- ``jvp`` / ``vjp``: the marginal cost of one more product on the kept graph (what ``EvalCounter.jvp_cost`` and
  ``vjp_cost`` stand for, since HSDS makes two per CG iteration);
- rejected alternatives, per call: ``torch.func.jvp`` (forward-mode AD), a double backward recomputed from
  scratch, and (``--with-linearize``) ``torch.func.linearize``'s trace plus one product.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from eimsdk import Editor
from eimsdk.autodiff import JVP_STRATEGIES, Linearization
from eimsdk.testing.tiny import build_tiny_pipeline


def _seconds(fn, sync) -> float:
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def measure(encoder, batch: int, repeats: int, with_linearize: bool) -> dict[str, float]:
    """Median over rounds of each measurement divided by that round's forward (rounds interleave, so that a
    shared, busy machine slows a forward and the products it is compared with alike). ``forward`` is in seconds."""
    device = encoder.device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    h, w = encoder.default_image_size
    g = torch.Generator("cpu").manual_seed(0)
    with torch.no_grad():
        z0 = encoder.encode_images((torch.rand(batch, 3, h, w, generator=g) * 2 - 1).to(device, encoder.dtype))
        cond = encoder.encode_prompts(["a photo of a red circle on the left"] * batch)
    t = torch.full((batch,), 0.5, device=device)
    z = encoder.add_noise(z0, torch.randn(z0.shape, generator=g).to(z0), t)
    v, u = torch.randn_like(z), torch.randn_like(z)
    f = lambda x: encoder._predict_eps(x, t, cond)  # noqa: E731
    kept = Linearization(encoder, z, t, cond)
    kept.vjp(u)

    def double_backward():
        with sdpa_kernel(SDPBackend.MATH):
            x = z.detach().requires_grad_(True)
            y = f(x)
        d = torch.zeros_like(y, requires_grad=True)
        (gd,) = torch.autograd.grad(y, x, d, create_graph=True)
        return torch.autograd.grad(gd, d, v)[0]

    def forward_mode():
        with sdpa_kernel(SDPBackend.MATH):
            return torch.func.jvp(f, (z,), (v,))[1]

    def linearize_once():
        with sdpa_kernel(SDPBackend.MATH):
            _, jvp_fn = torch.func.linearize(f, z)
        return jvp_fn(v)

    jobs = {
        "graph forward": lambda: Linearization(encoder, z, t, cond),
        "graph forward + dual build": lambda: Linearization(encoder, z, t, cond).vjp(u),
        "jvp": lambda: kept.jvp(v),
        "vjp": lambda: kept.vjp(u),
        "rejected: double backward per call": double_backward,
        "rejected: torch.func.jvp per call": forward_mode,
    }
    forward = lambda: torch.no_grad()(f)(z)  # noqa: E731
    for job in [forward, *jobs.values()]:  # warm up
        job()
    ratios: dict[str, list[float]] = {k: [] for k in jobs}
    forwards = []
    for _ in range(repeats):
        unit = _seconds(forward, sync)
        forwards.append(unit)
        for name, job in jobs.items():
            ratios[name].append(_seconds(job, sync) / unit)
    out = {"forward": statistics.median(forwards), **{k: statistics.median(r) for k, r in ratios.items()}}
    out["dual build"] = out["graph forward + dual build"] - out["graph forward"]
    if with_linearize:
        out["rejected: torch.func.linearize trace + 1 product"] = _seconds(linearize_once, sync) / out["forward"]
    return out


def accuracy(families: list[str], root: Path) -> None:
    """Relative error of each JVP strategy (and its VJP) in float64, float32 and bfloat16 against double backward in
    float64, at one guided point of batch 2 on each tiny backend."""
    for family in families:
        build_tiny_pipeline(family, root / family)
        ref_enc = Editor.from_pretrained(root / family, dtype="float64").encoder
        h, w = ref_enc.default_image_size
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            z0 = ref_enc.encode_images((torch.rand(2, 3, h, w, generator=g) * 2 - 1).double())
        t = torch.tensor([0.3, 0.7])
        z = ref_enc.add_noise(z0, torch.randn(z0.shape, generator=g, dtype=torch.float64), t)
        v, u = (torch.randn(z.shape, generator=g, dtype=torch.float64) for _ in range(2))
        prompts = ["a red circle", "a blue square"]
        ref = Linearization(ref_enc, z, t, ref_enc.encode_prompts(prompts), guidance_scale=2.0)
        ref_jv, ref_ju = ref.jvp(v), ref.vjp(u)
        for dtype in (torch.float64, torch.float32, torch.bfloat16):
            enc = Editor.from_pretrained(root / family, dtype=str(dtype).split(".")[1]).encoder
            with torch.no_grad():
                cond = enc.encode_prompts(prompts)
            for strategy in JVP_STRATEGIES:
                lin = Linearization(enc, z.to(dtype), t, cond, guidance_scale=2.0, jvp=strategy)
                jv, ju = lin.jvp(v.to(dtype)).double(), lin.vjp(u.to(dtype)).double()
                print(f"| {family} | {str(dtype).split('.')[1]} | {strategy} | "
                      f"{float((jv - ref_jv).norm() / ref_jv.norm()):.1e} | "
                      f"{float((ju - ref_ju).norm() / ref_ju.norm()):.1e} |", flush=True)


def toy_paired(models: list[str], tasks: int) -> dict[str, dict[str, float]]:
    """HSDS with the planner's default (``jvp="auto"``) against exact double backward on the shipped toy models,
    paired (same scene, prompts, seed): cosine of ``dz``, and how often the edited image reads the target colour."""
    from eimsdk_toy.readers import ToyReader
    from eimsdk_toy.scenes import caption, make_spec, render

    reader, colours = ToyReader(), ["red", "green", "blue", "yellow"]
    out = {}
    for model in models:
        editor = Editor.from_pretrained(model)
        cosines, hits = [], {"auto": 0, "double-backward": 0}
        for i in range(tasks):
            spec = make_spec(1000 + i)
            target = spec.model_copy(update={"colour": colours[(colours.index(spec.colour) + 1) % 4]})
            image, latent = render(spec), None
            found = {}
            for jvp in hits:
                latent = latent or editor.encode(image, caption(spec))
                found[jvp] = editor.find_direction(image, caption(spec), caption(target), latent=latent, seed=i,
                                                   jvp=jvp)
                edited = editor.apply(image, caption(spec), found[jvp], latent=latent).images[0]
                hits[jvp] += reader.read([edited])[0]["colour"] == target.colour
            cosines.append(float(torch.nn.functional.cosine_similarity(
                found["auto"].dz.flatten(), found["double-backward"].dz.flatten(), dim=0)))
        out[model] = {"min_cosine": min(cosines), "tasks": tasks,
                      **{f"colour_hits_{k}": v for k, v in hits.items()}}
        print(model, out[model], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["pixart", "sd3", "flux"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--with-linearize", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--accuracy", action="store_true",
                        help="instead: each strategy's error against double backward in float64")
    parser.add_argument("--toy-paired", type=int, metavar="TASKS",
                        help="instead: the planner's default against double backward on the toy models")
    args = parser.parse_args()
    if args.accuracy:
        with tempfile.TemporaryDirectory() as tmp:
            accuracy(args.families, Path(tmp))
        return
    if args.toy_paired:
        toy_paired(["toy-pixart", "toy-sd3", "toy-flux"], args.toy_paired)
        return
    torch.manual_seed(0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            build_tiny_pipeline(family, Path(tmp) / family)
            encoder = Editor.from_pretrained(Path(tmp) / family, device=args.device).encoder
            results[family] = measure(encoder, args.batch, args.repeats, args.with_linearize)
    rows = list(next(iter(results.values())))
    print(f"\nbatch {args.batch}, device {args.device}, torch {torch.__version__}; multiples of one forward "
          "(forward: milliseconds)\n")
    print("| measurement | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for row in rows:
        cells = [f"{r['forward'] * 1e3:.2f} ms" if row == "forward" else f"{r[row]:.2f}" for r in results.values()]
        print(f"| {row} | " + " | ".join(cells) + " |")
    med = {k: statistics.median(r[k] for r in results.values()) for k in ("jvp", "vjp")}
    print(f"\nmedian over backends: jvp_cost = {med['jvp']:.2f}, vjp_cost = {med['vjp']:.2f} forward-equivalents")
    if args.json:
        args.json.write_text(json.dumps({"batch": args.batch, "device": args.device, "forward_multiples": results,
                                         "median_cost": med}, indent=2))


if __name__ == "__main__":
    main()
