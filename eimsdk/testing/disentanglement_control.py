"""The control of both disentanglement measures: analytic worlds whose entanglement is set by ``overlap``.

In a :class:`~eimsdk.testing.analytic.GaussianEncoder` world every attribute owns a band of latent rows (so of pixel
rows), and ``overlap`` mixes one shared direction into every attribute word's pattern: at 0 an attribute edit
touches only its own band, at 1 every attribute moves along the same direction. For each world, ``sources`` random
prompts (one word per attribute) are edited along every attribute to another word with the world's exact edit
(``dz`` the change of the conditional mean, ``dc`` the change of the text embedding), and

- **D** (reader-based): :class:`BandReader` reads each attribute from its own pixel rows; ``M`` and ``D`` as the
  benchmark computes them, with an interval over tasks;
- **S** (reader-free): :class:`~eimsdk.metrics.internal.ResponseOverlap` of the same directions, with an interval
  over sources.

Both must fall as ``overlap`` grows. ``python -m eimsdk.testing.disentanglement_control`` prints the table.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

import numpy as np
import torch

from eimsdk.interfaces import AttributeReader
from eimsdk.metrics.disentanglement import dci_disentanglement, matrix_from_changes, reader_changes
from eimsdk.metrics.internal import ResponseOverlap
from eimsdk.metrics.intervals import bootstrap_dci, bootstrap_mean
from eimsdk.records import Direction
from eimsdk.testing.analytic import GaussianEncoder

OVERLAPS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)


class BandReader(AttributeReader):
    """Reads each attribute of an analytic world from its own latent band: the word whose pattern (plus the base
    mean) is nearest there. Exact when ``overlap = 0``; other attributes' edits leak into the band otherwise."""

    name = "analytic-band"

    def __init__(self, encoder: GaussianEncoder) -> None:
        self.encoder = encoder
        self.attributes = {g: list(words) for g, words in encoder.attributes.items()}

    def read(self, images: Sequence[Any]) -> list[dict[str, Any]]:
        enc = self.encoder
        pixels = torch.stack(list(images)) if not torch.is_tensor(images) else images  # (B, 3, H, W)
        z = enc.encode_images(pixels).to(torch.float64).flatten(1)  # (B, D)
        out: list[dict[str, Any]] = [{} for _ in range(z.shape[0])]
        for g, (group, words) in enumerate(self.attributes.items()):
            band = enc.group_masks[g].bool()  # (D,)
            templates = torch.stack([enc.base_mean + enc.patterns[:, enc.word_index[w]] for w in words])  # (W, D)
            dist = torch.cdist(z[:, band], templates[:, band])  # (B, W)
            for i, k in enumerate(dist.argmin(dim=1).tolist()):
                out[i][group] = words[k]
        return out


def _prompt(words: dict[str, str]) -> str:
    return "a " + " ".join(words.values())


def measure_world(overlap: float, sources: int = 40, seed: int = 0, resamples: int = 1000) -> dict[str, Any]:
    """D and S (each with a 95% bootstrap interval) of one analytic world, edited exactly along every attribute."""
    enc = GaussianEncoder(overlap=overlap, seed=seed, dtype=torch.float64)
    reader = BandReader(enc)
    rng = np.random.default_rng(seed)
    specs = [{g: words[rng.integers(len(words))] for g, words in enc.attributes.items()} for _ in range(sources)]
    prompts = [_prompt(s) for s in specs]
    images = enc.decode_latents(enc.mean(enc.encode_prompts(prompts)))  # (N, 3, H, W)
    before = reader.read(images)
    changes, directions = [], {g: [] for g in enc.attributes}
    meta = {"signature": enc.signature(), "model_id": enc.model_id}
    for spec, prompt, read in zip(specs, prompts, before):
        for group, words in enc.attributes.items():
            others = [w for w in words if w != spec[group]]
            target = _prompt({**spec, group: others[rng.integers(len(others))]})
            c_source, c_target = enc.encode_prompts([prompt]), enc.encode_prompts([target])
            edited = enc.decode_latents(enc.mean(c_target))
            changes.append((group, reader_changes(read, reader.read(edited)[0])))
            directions[group].append(Direction(enc.mean(c_target) - enc.mean(c_source), c_target - c_source, meta))
    rows = list(enc.attributes)
    dci = dci_disentanglement(matrix_from_changes(changes, rows, rows))
    overlap_score = ResponseOverlap()(enc, enc.encode(images, prompts), directions)
    return {"overlap": overlap, "sources": sources, "tasks": len(changes),
            "D": dci.overall, "D_interval": bootstrap_dci(changes, rows, rows, resamples=resamples, seed=seed),
            "targeted": float(np.mean(list(dci.targeted.values()))),
            "S": overlap_score.score, "S_interval": bootstrap_mean(overlap_score.per_source, resamples=resamples,
                                                                 seed=seed)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eimsdk.testing.disentanglement_control",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--overlaps", type=float, nargs="+", default=list(OVERLAPS))
    p.add_argument("--sources", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print("| overlap | tasks | D [95% interval] | targeted | S [95% interval] |\n|---|---|---|---|---|")
    for overlap in args.overlaps:
        r = measure_world(overlap, args.sources, args.seed)
        print(f"| {overlap:g} | {r['tasks']} | {r['D']:.3f} [{r['D_interval'][0]:.3f}, {r['D_interval'][1]:.3f}] | "
              f"{r['targeted']:.3f} | {r['S']:.3f} [{r['S_interval'][0]:.3f}, {r['S_interval'][1]:.3f}] |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
