"""Records that flow through E -> I -> M (conditioning, joint latents, directions, results) and atomic output."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from eimsdk.cost import Cost
from eimsdk.errors import DirectionMismatchError, InputError

if TYPE_CHECKING:
    from PIL import Image

    from eimsdk.interfaces import Encoder


@dataclass(frozen=True)
class Conditioning:
    """Every text embedding a model family consumes, as named tensors with a leading batch dimension.

    ``embeds`` holds float tensors (``prompt_embeds`` (B, L, D), ``pooled_prompt_embeds`` (B, P), ...);
    ``masks`` holds, for sequence embeddings that have one, a (B, L) 0/1 mask of real tokens. Arithmetic
    (``+``, ``-``, scalar ``*``) acts on ``embeds``; masks combine by union, so an edited prompt may use
    tokens the source prompt did not.
    """

    embeds: Mapping[str, torch.Tensor]
    masks: Mapping[str, torch.Tensor] = field(default_factory=dict)

    # -------------------------------------------------------------------------------- arithmetic
    def _combine(self, other: "Conditioning", op) -> "Conditioning":
        if not isinstance(other, Conditioning):
            return NotImplemented
        if set(self.embeds) != set(other.embeds):
            raise DirectionMismatchError(
                f"conditionings have different components: {sorted(self.embeds)} vs {sorted(other.embeds)}; "
                "they come from different model families")
        embeds = {}
        for k, v in self.embeds.items():
            w = other.embeds[k]
            if v.shape[1:] != w.shape[1:]:
                raise DirectionMismatchError(
                    f"conditioning {k!r} has shape {tuple(v.shape[1:])} here and {tuple(w.shape[1:])} in the "
                    "other operand; they come from different models or token lengths")
            embeds[k] = op(v, w.to(v))
        masks = {}
        for k in set(self.masks) | set(other.masks):
            a, b = self.masks.get(k), other.masks.get(k)
            masks[k] = a if b is None else b if a is None else torch.maximum(a, b.to(a))
        return Conditioning(embeds, masks)

    def __add__(self, other: "Conditioning") -> "Conditioning":
        return self._combine(other, torch.add)

    def __sub__(self, other: "Conditioning") -> "Conditioning":
        return self._combine(other, torch.sub)

    def __mul__(self, scale: float | torch.Tensor) -> "Conditioning":
        return Conditioning({k: v * scale for k, v in self.embeds.items()}, dict(self.masks))

    __rmul__ = __mul__

    def __neg__(self) -> "Conditioning":
        return self * -1.0

    # -------------------------------------------------------------------------------- batch helpers
    @property
    def batch_size(self) -> int:
        return next(iter(self.embeds.values())).shape[0]

    def map(self, fn) -> "Conditioning":
        """Apply ``fn`` to every tensor (embeds and masks)."""
        return Conditioning({k: fn(v) for k, v in self.embeds.items()}, {k: fn(v) for k, v in self.masks.items()})

    def to(self, *args: Any, **kwargs: Any) -> "Conditioning":
        emb = {k: v.to(*args, **kwargs) for k, v in self.embeds.items()}
        dev = next(iter(emb.values())).device
        return Conditioning(emb, {k: v.to(dev) for k, v in self.masks.items()})

    def detach(self) -> "Conditioning":
        return self.map(torch.Tensor.detach)

    def repeat(self, n: int) -> "Conditioning":
        """Repeat each item ``n`` times along the batch (item-major: a a a b b b)."""
        return self.map(lambda t: t.repeat_interleave(n, dim=0))

    def expand_to(self, batch: int) -> "Conditioning":
        """Broadcast a batch-1 conditioning to ``batch`` items (no-op if already that size)."""
        if self.batch_size == batch:
            return self
        if self.batch_size != 1:
            raise InputError(f"cannot broadcast a conditioning of batch {self.batch_size} to batch {batch}")
        return self.map(lambda t: t.expand(batch, *t.shape[1:]))

    def __getitem__(self, idx: int | slice) -> "Conditioning":
        sl = slice(idx, idx + 1) if isinstance(idx, int) else idx
        return self.map(lambda t: t[sl])

    @staticmethod
    def cat(items: list["Conditioning"]) -> "Conditioning":
        first = items[0]
        return Conditioning({k: torch.cat([c.embeds[k] for c in items]) for k in first.embeds},
                            {k: torch.cat([c.masks[k] for c in items]) for k in first.masks})

    def masked(self) -> "Conditioning":
        """Zero the embedding rows of padded tokens (``masks`` == 0)."""
        emb = dict(self.embeds)
        for k, m in self.masks.items():
            emb[k] = emb[k] * m.to(emb[k].dtype).unsqueeze(-1)
        return Conditioning(emb, dict(self.masks))

    def flat(self) -> torch.Tensor:
        """All embeds of each item as one vector: (B, total)."""
        return torch.cat([v.reshape(v.shape[0], -1) for _, v in sorted(self.embeds.items())], dim=1)

    def norm(self) -> torch.Tensor:
        return self.flat().norm(dim=1)

    def shapes(self) -> dict[str, list[int]]:
        return {k: list(v.shape[1:]) for k, v in sorted(self.embeds.items())}

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {f"{prefix}.embeds.{k}": v for k, v in self.embeds.items()}
        out.update({f"{prefix}.masks.{k}": v for k, v in self.masks.items()})
        return out

    @staticmethod
    def from_tensors(tensors: Mapping[str, torch.Tensor], prefix: str) -> "Conditioning":
        embeds = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(prefix + ".embeds.")}
        masks = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(prefix + ".masks.")}
        return Conditioning(embeds, masks)

    def is_finite(self) -> bool:
        return all(bool(torch.isfinite(v).all()) for v in self.embeds.values())


@dataclass
class JointLatent:
    """The joint latent ``J = (z0, c)`` of a batch of images and the prompts that describe them."""

    z0: torch.Tensor  # family latent format, (B, ...)
    cond: Conditioning
    prompts: list[str]
    image_size: tuple[int, int] | None = None  # (H, W) of the model's input images
    original_sizes: list[tuple[int, int]] | None = None  # (H, W) of the user's images before resizing

    @property
    def batch_size(self) -> int:
        return self.z0.shape[0]


FORMAT_VERSION = 1


@dataclass
class Direction:
    """An editing direction ``d = (dz, dc)`` in a model's joint latent space, plus what made it.

    ``dz`` has the shape of one latent (1, ...); ``dc`` is a batch-1 :class:`Conditioning`. A direction fits
    every image of the same model and size. Save with :meth:`save` (safetensors + JSON), load with
    :meth:`load`; :meth:`check_fits` refuses another model with a clear message.
    """

    dz: torch.Tensor
    dc: Conditioning
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dz.ndim < 2 or self.dz.shape[0] != 1:
            raise InputError(f"Direction.dz must have a leading batch dimension of 1, got shape {tuple(self.dz.shape)}")
        if self.dc.batch_size != 1:
            raise InputError(f"Direction.dc must have batch 1, got {self.dc.batch_size}")

    # ------------------------------------------------------------------------- algebra
    def __add__(self, other: "Direction") -> "Direction":
        if self.meta.get("signature") != other.meta.get("signature"):
            raise DirectionMismatchError("cannot add directions of different models: "
                                         f"{self.meta.get('model_id')!r} vs {other.meta.get('model_id')!r}")
        return Direction(self.dz + other.dz, self.dc + other.dc,
                         {**self.meta, "method": "sum", "parts": [self.meta.get("name"), other.meta.get("name")]})

    def __mul__(self, scale: float) -> "Direction":
        return Direction(self.dz * scale, self.dc * scale, {**self.meta, "scale": self.meta.get("scale", 1.0) * scale})

    __rmul__ = __mul__

    def only(self, part: str) -> "Direction":
        """The ablation ``"dz"`` (image part only) or ``"dc"`` (text part only)."""
        if part == "dz":
            return Direction(self.dz, self.dc * 0.0, {**self.meta, "ablation": "dz-only"})
        if part == "dc":
            return Direction(torch.zeros_like(self.dz), self.dc, {**self.meta, "ablation": "dc-only"})
        raise InputError(f"part={part!r} is not one of 'dz', 'dc'")

    def to(self, *args: Any, **kwargs: Any) -> "Direction":
        return Direction(self.dz.to(*args, **kwargs), self.dc.to(*args, **kwargs), dict(self.meta))

    # ------------------------------------------------------------------------- compatibility
    def check_fits(self, encoder: "Encoder", z0: torch.Tensor | None = None) -> None:
        """Raise :class:`DirectionMismatchError` unless this direction was made for ``encoder``'s model."""
        sig = encoder.signature()
        mine = self.meta.get("signature", {})
        if mine.get("family") != sig["family"]:
            raise DirectionMismatchError(
                f"direction was found on a {mine.get('family')!r} model ({self.meta.get('model_id')!r}) and cannot be "
                f"applied to a {sig['family']!r} model ({encoder.model_id!r}); find a new direction on this model")
        for key in ("latent_channels", "cond_shapes"):
            if mine.get(key) != sig.get(key):
                raise DirectionMismatchError(
                    f"direction does not fit this model: its {key} is {mine.get(key)} but the model's is "
                    f"{sig.get(key)} (direction from {self.meta.get('model_id')!r}, model {encoder.model_id!r})")
        if z0 is not None and tuple(z0.shape[1:]) != tuple(self.dz.shape[1:]):
            raise DirectionMismatchError(
                f"direction's dz has latent shape {tuple(self.dz.shape[1:])} but the image's latent is "
                f"{tuple(z0.shape[1:])}; use an image of size {self.meta.get('image_size')} or find a direction "
                "at this size")

    # ------------------------------------------------------------------------- artefact
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (``.safetensors``) and ``path`` with ``.json`` atomically; returns the tensor path."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"dz": self.dz.detach().contiguous().cpu(), **{k: v.detach().contiguous().cpu()
                                                                 for k, v in self.dc.tensors("dc").items()}}
        meta = {**self.meta, "format_version": FORMAT_VERSION}
        meta_json = json.dumps(meta, sort_keys=True, default=str)
        header = {"eimsdk": meta_json, "sha256": _tensor_digest(tensors, meta_json)}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
        atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True, default=str))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "Direction":
        """Load a direction saved by :meth:`save`; never unpickles; checks integrity."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        if not path.is_file():
            raise InputError(f"direction file {str(path)!r} does not exist; pass the .safetensors written by "
                             "Direction.save or `eimsdk direction find`")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
            tensors = load_file(str(path))
        except Exception as exc:  # noqa: BLE001
            raise DirectionMismatchError(f"{str(path)!r} is not a readable safetensors file ({exc}); it is corrupt "
                                         "or not a direction") from exc
        if "eimsdk" not in header or "dz" not in tensors:
            raise DirectionMismatchError(f"{str(path)!r} is a safetensors file but not an eimsdk direction "
                                         "(no 'eimsdk' metadata or no 'dz' tensor)")
        if header.get("sha256") != _tensor_digest(tensors, header["eimsdk"]):
            raise DirectionMismatchError(f"{str(path)!r} failed its integrity check: its tensors or metadata do not "
                                         "match the digest written at save time (the file was modified); re-create "
                                         "it with Direction.save or `eimsdk direction find`")
        meta = json.loads(header["eimsdk"])
        _check_sidecar(path.with_suffix(".json"), meta)
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise DirectionMismatchError(f"{str(path)!r} has format version {meta['format_version']}, newer than "
                                         f"this eimsdk reads ({FORMAT_VERSION}); upgrade eimsdk")
        dc = Conditioning.from_tensors(tensors, "dc")
        meta.pop("format_version", None)
        return cls(tensors["dz"], dc, meta).to(device)


def _check_sidecar(sidecar: Path, signed: dict[str, Any]) -> None:
    """Refuse a direction whose JSON sidecar (written for people to read) differs from the signed header."""
    if not sidecar.is_file():
        return
    try:
        shown = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise DirectionMismatchError(f"{str(sidecar)!r} is not readable JSON ({exc}); delete it or save the "
                                     "direction again") from None
    if shown != signed:
        keys = sorted(k for k in set(shown) | set(signed) if shown.get(k) != signed.get(k))
        raise DirectionMismatchError(f"{str(sidecar)!r} differs from the signed header of its .safetensors (keys "
                                     f"{keys}); it was edited: delete it, or save the direction again")


def _tensor_digest(tensors: Mapping[str, torch.Tensor], meta_json: str) -> str:
    """SHA-256 over the metadata JSON and every tensor's name, dtype, shape and bytes."""
    import hashlib

    h = hashlib.sha256(meta_json.encode())
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class EditResult:
    """The edited images, the direction(s) used, and what it cost."""

    images: list["Image.Image"]
    direction: Direction | None
    strengths: list[float]
    cost: Cost
    find_cost: Cost | None = None
    latents: torch.Tensor | None = None
    pixels: torch.Tensor | None = None  # (B, 3, H, W) float in [-1, 1] on the CPU, before conversion to images
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> "Image.Image":
        return self.images[0]


# ------------------------------------------------------------------------------------------ atomic output
#: Temporary files of :func:`atomic_write`: ``.NAME.<8 random characters>.tmp<suffix>`` beside the target.
TEMP_FILE_PATTERN = r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[^.]*)?$"


def atomic_write(path: str | os.PathLike, writer) -> Path:
    """Call ``writer(tmp_path)`` then rename onto ``path``, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; a finished output gets an ordinary file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_write` left under ``folder``; returns what was removed.

    Call it only while no other process writes there (``eimsdk bench`` holds its output folder's lock).
    """
    import re

    pattern = re.compile(TEMP_FILE_PATTERN)
    removed = [p for p in Path(folder).rglob(".*") if p.is_file() and pattern.match(p.name)]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


#: Output image formats by suffix; any other suffix is refused before work starts.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
                 ".bmp": "BMP"}


def image_format(path: str | os.PathLike, name: str = "out") -> str:
    """The PIL format an output image is written in, from its suffix; an unknown suffix is an InputError."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise InputError(f"{name}={str(path)!r}: cannot write images as {suffix or 'a file without a suffix'!r}; "
                         f"use one of {', '.join(sorted(IMAGE_FORMATS))}")
    return IMAGE_FORMATS[suffix]


def save_image(image: "Image.Image", path: str | os.PathLike) -> Path:
    """Save a PIL image atomically, in the format its suffix names (:data:`IMAGE_FORMATS`)."""
    fmt = image_format(path)
    return atomic_write(path, lambda tmp: image.save(tmp, format=fmt))
