"""Benchmark manifests: one JSON object per line, one edit task per object.

Fields of an item (see ``docs/benchmark.md``):

- ``id`` (unique; letters, digits, ``.``, ``_``, ``-``): names the outputs and seeds the item.
- ``image``: a path, relative to the manifest's folder.
- ``source_prompt``: describes the source image; ``target_prompts``: describe the edited image (several are
  averaged into one direction); ``attribute``: what the edit changes.
- ``expected``: attribute values the edited image must show (``{"colour": "blue"}``); ``source_values``: the
  source's known values, when known.
- ``region`` (optional): the pixels the edit may change, as PIE-Bench's run-length code ``rle`` = [start, length,
  start, length, ...] over the row-major flattened mask of ``shape`` (H, W).
- ``preserve_prompts``, ``group`` (items that edit the same source), ``size`` (model input H, W), ``meta``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eimsdk.errors import InputError
from eimsdk.records import atomic_write_text

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$"


def rle_encode(mask: np.ndarray) -> list[int]:
    """(H, W) boolean mask -> [start, length, ...] runs of True over the row-major flattened mask."""
    flat = np.asarray(mask, dtype=bool).ravel()
    edges = np.diff(np.concatenate([[0], flat.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [int(v) for pair in zip(starts, ends - starts) for v in pair]


def rle_decode(rle: list[int], shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rle_encode` (runs past the end are clipped, as PIE-Bench's decoder does)."""
    n = shape[0] * shape[1]
    flat = np.zeros(n, dtype=bool)
    for start, length in zip(rle[0::2], rle[1::2]):
        flat[start : min(start + length, n)] = True
    return flat.reshape(shape)


class Region(BaseModel):
    """The pixels an edit may change, run-length coded (PIE-Bench's layout)."""

    model_config = ConfigDict(extra="forbid")

    rle: list[int] = Field(description="[start, length, start, length, ...] over the flattened (H, W) mask")
    shape: tuple[int, int] = Field(description="(H, W) of the mask")

    @field_validator("rle")
    @classmethod
    def _pairs(cls, rle: list[int]) -> list[int]:
        if len(rle) % 2 or any(v < 0 for v in rle):
            raise ValueError("rle must hold non-negative (start, length) pairs")
        return rle

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> "Region":
        return cls(rle=rle_encode(mask), shape=tuple(np.asarray(mask).shape))

    def to_mask(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """The (H, W) boolean mask, resized (nearest) to ``size`` (H, W) when given."""
        mask = rle_decode(self.rle, self.shape)
        if size is None or tuple(size) == tuple(self.shape):
            return mask
        from PIL import Image

        im = Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)
        return np.asarray(im) > 127


class ManifestItem(BaseModel):
    """One edit task of a benchmark manifest (module docstring)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    image: str = Field(min_length=1)
    source_prompt: str = Field(min_length=1)
    attribute: str = Field(min_length=1)
    target_prompts: list[str] = Field(min_length=1)
    expected: dict[str, Any] = Field(default_factory=dict)
    source_values: dict[str, Any] = Field(default_factory=dict)
    region: Region | None = None
    preserve_prompts: list[str] = Field(default_factory=list)
    group: str | None = None
    size: tuple[int, int] | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("target_prompts", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("target_prompts", "preserve_prompts")
    @classmethod
    def _non_empty(cls, prompts: list[str]) -> list[str]:
        if any(not p.strip() for p in prompts):
            raise ValueError("prompts must be non-empty strings")
        return prompts

    def load_source(self):
        """The source image as an RGB PIL image."""
        from eimsdk.images import load_image

        return load_image(self.image, name=f"item {self.id!r} image")

    def mask(self, size: tuple[int, int]) -> np.ndarray | None:
        """The (H, W) mask of the edited region at ``size``, or None when the item has no region."""
        return None if self.region is None else self.region.to_mask(size)

    def check_source(self) -> None:
        """Refuse, when the benchmark is set up, an item whose image file is missing (not mid-run)."""
        if not Path(self.image).is_file():
            raise InputError(f"item {self.id!r}: image {self.image!r} does not exist or is not a file")

    @property
    def group_key(self) -> str:
        """Items with the same key edit the same source."""
        return self.group or f"{self.image}|{self.source_prompt}"


def parse_items(rows: Iterable[dict[str, Any]], *, base: Path | None = None, where: str = "manifest"
                ) -> list[ManifestItem]:
    """Validate raw item dicts; image paths are resolved against ``base``; ids must be unique."""
    items, seen = [], {}
    for n, row in enumerate(rows, start=1):
        try:
            item = ManifestItem.model_validate(row)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'item'}: {e['msg']}" for e in exc.errors())
            raise InputError(f"{where} item {n} is invalid: {problems}") from None
        if item.id in seen:
            raise InputError(f"{where} items {seen[item.id]} and {n} share the id {item.id!r}; ids must be unique")
        seen[item.id] = n
        if base is not None and not os.path.isabs(item.image):
            item = item.model_copy(update={"image": str((base / item.image).resolve())})
        items.append(item)
    if not items:
        raise InputError(f"{where} has no items; write one JSON object per line")
    return items


def load_manifest(path: str | os.PathLike) -> list[ManifestItem]:
    """Read a JSONL manifest; errors name the line and what to fix."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {str(path)!r} does not exist; pass a .jsonl file, a PIE-Bench mapping_file.json "
                         "or a plugin's manifest source (`eimsdk plugins --kind manifest`)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError(f"manifest {str(path)!r} line {n} is not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise InputError(f"manifest {str(path)!r} line {n} must be a JSON object, got {type(row).__name__}")
        rows.append(row)
    return parse_items(rows, base=path.parent, where=f"manifest {str(path)!r}")


def write_manifest(items: Iterable[ManifestItem], path: str | os.PathLike) -> Path:
    """Write items as JSONL, atomically."""
    text = "".join(json.dumps(item.model_dump(exclude_defaults=True), sort_keys=True) + "\n" for item in items)
    return atomic_write_text(path, text)


def resolve_manifest(spec: str, folder: str | os.PathLike, plugin_manager: Any = None) -> list[ManifestItem]:
    """A JSONL manifest path, a PIE-Bench ``mapping_file.json`` (or its folder), or ``SOURCE[:ARGUMENT]``.

    ``SOURCE`` is a manifest source registered by a plugin (``toy:SCENES``); it writes its images under ``folder``.
    """
    path = Path(spec)
    if path.is_dir() and (path / "mapping_file.json").is_file():
        path = path / "mapping_file.json"
    if path.exists() or path.suffix in (".jsonl", ".json") or os.sep in spec:
        if path.suffix == ".json":
            from eimsdk.bench.pie import load_pie_bench

            return load_pie_bench(path)
        return load_manifest(path)
    from eimsdk.plugins import get_plugin_manager

    pm = plugin_manager or get_plugin_manager()
    name, _, argument = spec.partition(":")
    if name not in pm.components["manifest"]:
        have = ", ".join(pm.names("manifest")) or "none"
        raise InputError(f"no manifest source {name!r} is installed (installed: {have}); MANIFEST is a .jsonl file, "
                         "a PIE-Bench mapping_file.json (or its folder), or SOURCE[:ARGUMENT] of a plugin's manifest "
                         "source (`eimsdk plugins --kind manifest`)")
    items = pm.load("manifest", name)(argument, Path(folder))
    return parse_items([item.model_dump() for item in items], where=f"manifest source {spec!r}")
