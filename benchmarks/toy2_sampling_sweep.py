"""Sampling settings of a world-2 toy model on tuning captions, and where its pattern errors fall.

For each GUIDANCE,STEPS[,KEY=VALUE...] setting (KEY=VALUE: scheduler config overrides, ``scheduler=CLASS`` swaps
the class; see ``eimsdk_toy.evaluate.with_scheduler``): ``--n`` captions drawn from ``--seed`` (777 by default, not ``evaluate``'s seed, so
the evaluation's numbers stay untuned), the pipeline's own text-to-image, read by the ``toy2`` reader; prints the
rate of all named attributes at once, the fine ones, the pattern errors as (true, read, object size) counts, the
second object's shape frequencies against the training scenes', every unnamed attribute's total variation distance
to the training scenes (permutation p), and
each later setting against the first on the same captions and seeds (all named attributes right; exact McNemar p,
Wilson intervals):

    OMP_NUM_THREADS=1 python benchmarks/toy2_sampling_sweep.py --model DIR/sd3 --settings 4,20 7,20 4,40 \
        4,20,stochastic_sampling=true
"""

from __future__ import annotations

import argparse
import collections
import time


def main() -> None:
    from eimsdk.bench.stats import format_p, paired_test, wilson_interval
    from eimsdk_toy.evaluate import (eval_specs, load_pipeline, parse_scheduler_options, sample_readings, score,
                                     training_readings, unnamed_statistics, with_scheduler)
    from eimsdk_toy.worlds import get_world

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a world-2 toy pipeline folder")
    p.add_argument("--settings", nargs="+", default=["4,20"], help="GUIDANCE,STEPS[,KEY=VALUE...] settings")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()

    toy = get_world(2)
    pipe, family = load_pipeline(args.model)
    specs = eval_specs(args.n, args.seed, 2)
    training = training_readings(args.n, 2)
    first: dict[int, bool] | None = None
    for setting in args.settings:
        fields = setting.split(",")
        guidance, steps = float(fields[0]), int(fields[1])
        with_scheduler(pipe, parse_scheduler_options(fields[2:]))
        start = time.perf_counter()
        readings = sample_readings(pipe, family, specs, steps=steps, guidance=guidance, batch=args.batch,
                                   seed=args.seed, world=2)
        rates = score(specs, readings, toy.named)
        errors = collections.Counter((s.pattern, r["pattern"], s.size) for s, r in zip(specs, readings)
                                     if r["pattern"] != s.pattern)
        fine = " ".join(f"{a}={rates['attributes'][a]:.3f}" for a in ("pattern", "shade", "outline", "colour"))
        print(f"{setting}: guidance={guidance} steps={steps} all={rates['all']:.3f} {fine} "
              f"({time.perf_counter() - start:.0f} s) pattern errors: {dict(errors)}", flush=True)
        right = {i: all(r[a] == getattr(s, a) for a in toy.named) for i, (s, r) in enumerate(zip(specs, readings))}
        low, high = wilson_interval(sum(right.values()), len(right))
        line = f"    all named: {sum(right.values())}/{len(right)} [{low:.3f}, {high:.3f}]"
        if first is None:
            first = right
        else:
            test = paired_test(first, right)
            line += (f"; against {args.settings[0]}: right only there {test['only_a']}, only here {test['only_b']}, "
                     f"McNemar p {format_p(test['p_value'])}")
        print(line, flush=True)
        unnamed = unnamed_statistics(readings, training, toy.unnamed)
        extra = unnamed["extra_shape"]
        freq = " ".join(f"{c} {extra['samples'][c]:.0%}/{extra['training'][c]:.0%}" for c in extra["samples"])
        print(f"    second object's shape, samples/training: {freq}", flush=True)
        print("    unnamed, TV (p): " + ", ".join(f"{name} {st['tv']:.3f} ({st['p_value']:.3g})"
                                                 for name, st in unnamed.items()), flush=True)


if __name__ == "__main__":
    main()
