"""The benchmark runner: every manifest item x model x method, one measured edit each, resumable and parallel.

Per (model, method, item) unit the runner encodes the source, finds a direction (seeded by the item id), applies
it at every strength, reads the attributes of the source and of each edit, and writes
``items/MODEL/METHOD/ID.json`` atomically, after the unit's images. A finished JSON whose ``key`` (a hash of
everything that determines the result) matches is never redone, so a killed run resumes where it stopped.

An output folder belongs to one run at a time: the run holds ``OUT/.lock`` (an OS file lock, released when the
process ends, however it ends; a second run on the same folder is refused naming the holder's pid), removes
the temporary files a killed run left, and refuses to continue a folder whose stored ``config.json`` has
other result-determining settings. Unit keys include a SHA-256 of each source image file's bytes, so a
replaced image is edited again.

Under ``accelerate launch`` / ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment) item
``i`` runs on rank ``i % WORLD_SIZE``; items are seeded by id, so results do not depend on the number of
processes. Rank 0 waits for every rank, merges ``results.jsonl`` and writes the report.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eimsdk.bench.manifest import ManifestItem, write_manifest
from eimsdk.errors import EimsdkError, InputError
from eimsdk.records import atomic_write_text, remove_stale_temps
from eimsdk.settings import check_device, describe_error, make_component, parse_value, route_settings

RESULT_VERSION = 2


class BenchConfig(BaseModel):
    """What to run. ``methods`` are finder names with optional overrides: ``hsds``, ``hsds:lam=0.1,t_edit=0.6``.

    An override goes to the manipulator when the manipulator's config has that field, else to the finder;
    ``manipulator=NAME`` gives the method a manipulator of its own (``flowedit:manipulator=flowedit``).
    """

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(min_length=1, description="model folders, hub ids or plugin model names")
    methods: list[str] = Field(min_length=1, description="finder names with optional :key=value,... overrides")
    strengths: list[float] = Field(default_factory=lambda: [1.0], min_length=1, max_length=64)
    reader: str = Field("toy", description="attribute reader plugin")
    reader_config: dict[str, Any] = Field(default_factory=dict)
    manipulator: str = "linear"
    manipulator_config: dict[str, Any] = Field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float32"
    size: tuple[int, int] | None = Field(None, description="model input (H, W); default: each item's own")
    seed: int = Field(0, ge=0, description="added to every item's id-derived seed (repeat trials)")
    numeric_tolerance: float = Field(0.05, ge=0.0, description="a continuous reading is preserved within this")
    save_images: bool = True
    save_directions: bool = False
    internal: int = Field(0, ge=0, description="groups (sources) for the reader-free score; 0 = off")
    metrics: list[str] = Field(default_factory=lambda: ["psnr", "ssim"],
                               description="edit metric names with optional :key=value,... settings")

    @field_validator("strengths")
    @classmethod
    def _finite(cls, v: list[float]) -> list[float]:
        import math

        if any(not math.isfinite(s) for s in v):
            raise ValueError("strengths must be finite numbers")
        return v


@dataclass
class MethodSpec:
    """A parsed ``--methods`` entry."""

    label: str
    finder: str
    finder_config: dict[str, Any]
    manipulator_config: dict[str, Any]
    manipulator: str | None = None  # None: the run's manipulator

    @property
    def slug(self) -> str:
        return slug(self.label)


def slug(text: str) -> str:
    """A folder-safe name: ``hsds:lam=0.1`` -> ``hsds_lam-0.1``."""
    s = re.sub(r"[^A-Za-z0-9.\-]+", "_", text.replace("=", "-")).strip("_.")
    return s or "x"


def parse_named(spec: str, what: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name:key=value,key=value`` -> (name, settings), values parsed as JSON when possible."""
    name, _, rest = spec.partition(":")
    if not name:
        raise InputError(f"{what} {spec!r} has no name; write NAME or NAME:key=value,...")
    settings: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise InputError(f"{what} {spec!r}: override {part!r} must be key=value")
        settings[key] = parse_value(value)
    return name, settings


def parse_method(spec: str, manipulator_fields: Sequence[str] = ()) -> MethodSpec:
    """A ``--methods`` entry; an override goes to the manipulator when its config has that field."""
    name, settings = parse_named(spec, "method")
    manipulator = settings.pop("manipulator", None)
    manip_cfg = {k: v for k, v in settings.items() if k in manipulator_fields}
    finder_cfg = {k: v for k, v in settings.items() if k not in manipulator_fields}
    return MethodSpec(label=spec, finder=name, finder_config=finder_cfg, manipulator_config=manip_cfg,
                      manipulator=manipulator)


def item_seed(item_id: str, offset: int = 0) -> int:
    """A seed that depends only on the item id (and a global offset)."""
    return (int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:4], "big") + offset) % (2**31 - 1)


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment; (0, 1, 0) when not launched.

    Checked before any unit runs: the ranks meet at the end through ``torch.distributed`` (rank 0 waits for the
    others, then merges), which needs ``MASTER_ADDR`` and ``MASTER_PORT``; a hand-set ``RANK`` / ``WORLD_SIZE``
    without them would otherwise edit every unit and fail with a traceback at that meeting.
    """
    values = {}
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        raw = os.environ.get(name, str(default))
        try:
            values[name] = int(raw)
        except ValueError:
            raise InputError(f"environment variable {name}={raw!r} is not an integer; unset it, or start the ranks "
                             "with `torchrun` or `accelerate launch`, which set it") from None
    rank, world_size, local_rank = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise InputError(f"environment variables RANK={rank}, WORLD_SIZE={world_size}, LOCAL_RANK={local_rank} do "
                         "not describe a rank of a run (need 0 <= RANK < WORLD_SIZE); unset them, or start the ranks "
                         "with `torchrun` or `accelerate launch`")
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)] if world_size > 1 else []
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise InputError(f"WORLD_SIZE={world_size} is set but {' and '.join(missing)} {verb} "
                         "not: the ranks meet through torch.distributed when they finish; start them with `torchrun "
                         "--nproc_per_node N -m eimsdk bench ...` or `accelerate launch`, or set MASTER_ADDR=127.0.0.1 "
                         "MASTER_PORT=29500 in every rank's environment")
    return rank, world_size, local_rank


def model_label(model: str) -> str:
    p = Path(model)
    return slug(p.name if p.exists() else model)


def result_path(out: Path, model: str, method: MethodSpec, item_id: str) -> Path:
    return out / "items" / model_label(model) / method.slug / f"{item_id}.json"


#: The settings that determine a unit's result; a folder holding a run with others is not reused.
RESULT_SETTINGS = {"strengths", "reader", "reader_config", "manipulator", "manipulator_config", "dtype", "size", "seed",
                   "numeric_tolerance", "metrics"}


def unit_key(item: ManifestItem, model: str, method: MethodSpec, config: BenchConfig) -> str:
    """Hash of everything that determines a unit's result (not the device, not the image flags).

    The hash of the image file's bytes stands for the image, not its path (kept only when the file cannot be
    read): a replaced image is a new unit, and units move between output folders (a manifest source renders into
    OUT/manifest).
    """
    digest = file_digest(item.image)
    fields = item.model_dump(exclude={"image"} if digest is not None else None)
    payload = {"v": RESULT_VERSION, "item": fields, "model": model, "method": method.label, "image_sha256": digest,
               **config.model_dump(include=RESULT_SETTINGS)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str | None:
    """SHA-256 of a file's bytes (cached by path, size and modification time); None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _file_digest(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _file_digest(path: str, size: int, mtime_ns: int) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


class OutputLock:
    """An exclusive lock on a benchmark output folder (``OUT/.lock``), held for the run's lifetime.

    The OS releases it when the holder ends, even by ``kill -9``; the file left behind then names a dead pid
    and the next run takes it over.
    """

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        try:
            import fcntl
        except ImportError:  # not POSIX (Windows): folders are not locked there
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InputError(f"--out {str(self.path.parent)!r} is in use by another eimsdk bench run (pid {holder}); "
                             "wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def check_stored_config(out: Path, config: BenchConfig) -> None:
    """Refuse a folder whose ``config.json`` holds other result-determining settings than ``config``."""
    stored_path = out / "config.json"
    if not stored_path.is_file():
        return
    try:
        stored = BenchConfig.model_validate(json.loads(stored_path.read_text()))
    except (OSError, ValueError) as exc:
        raise InputError(f"--out {str(out)!r} holds an unreadable config.json ({str(exc).splitlines()[0]}); delete "
                         "it or choose another --out") from None
    mine, theirs = config.model_dump(include=RESULT_SETTINGS), stored.model_dump(include=RESULT_SETTINGS)
    changed = sorted(k for k in RESULT_SETTINGS if json.dumps(mine[k], default=str) != json.dumps(theirs[k],
                                                                                                 default=str))
    if changed:
        diff = "; ".join(f"{k}: {theirs[k]!r} there, {mine[k]!r} here" for k in changed)
        raise InputError(f"--out {str(out)!r} holds a run with other settings ({diff}); continuing would overwrite "
                         "its results: choose another --out, or delete the folder to start over")


def read_result(path: Path) -> dict[str, Any] | None:
    """A finished unit's result, or None when absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_result(path: Path, record: dict[str, Any]) -> None:
    """Write a unit's result atomically (the file :func:`read_result` reads)."""
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True))


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of a run's ``results.jsonl``, or of a stored copy of it gzipped as ``results.jsonl.gz``."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        return [json.loads(line) for line in fh if line.strip()]


class Runner:
    """Runs a manifest; see the module docstring. ``plugin_manager`` defaults to the installed plugins."""

    def __init__(self, items: Sequence[ManifestItem], config: BenchConfig | dict[str, Any], out: str | os.PathLike, *,
                 plugin_manager: Any = None, progress: bool = True) -> None:
        from eimsdk.plugins import get_plugin_manager

        try:
            self.config = config if isinstance(config, BenchConfig) else BenchConfig.model_validate(config)
        except ValidationError as exc:
            raise InputError(describe_error(exc, BenchConfig, "benchmark")) from None
        self.items = list(items)
        if not self.items:
            raise InputError("the manifest has no items")
        self.out = Path(out)
        self.pm = plugin_manager or get_plugin_manager()
        self.progress = progress
        self.methods = [self._route(parse_method(m)) for m in self.config.methods]
        for what, names in (("methods", [m.slug for m in self.methods]),
                            ("models", [model_label(m) for m in self.config.models])):
            if len(set(names)) != len(names):
                raise InputError(f"{what} give duplicate folder names {names}; make them distinct")
        for m in self.methods:  # validate names and overrides before any model loads
            self._build("finder", m.finder, m.finder_config, f"method {m.label!r}")
            manipulator, shared = self._manipulator_of(m)
            self._build("manipulator", manipulator, {**shared, **m.manipulator_config}, f"method {m.label!r}")
        check_device(self.config.device, "--device")
        self.reader = self._reader()
        for item in self.items:
            item.check_source()
        self.rank, self.world_size, self.local_rank = dist_env()
        self.metrics = [self._build("metric", *parse_named(spec, "metric"), f"metric {spec!r}")
                        for spec in self.config.metrics]

    # ---------------------------------------------------------------------------------------------- setup
    def _route(self, method: MethodSpec) -> MethodSpec:
        """The method's overrides sent by field name to its finder or its manipulator (eimsdk.settings)."""
        manipulator = self._manipulator_of(method)[0]
        finder_config, manipulator_config = route_settings(
            method.finder_config, self.pm.load("finder", method.finder), self.pm.load("manipulator", manipulator),
            finder=method.finder, manipulator=manipulator)
        return MethodSpec(method.label, method.finder, finder_config, manipulator_config, method.manipulator)

    def _build(self, kind: str, name: str, settings: dict[str, Any], what: str):
        """The ``kind`` component ``name`` built with ``settings`` (and this rank's ``device`` when it takes one)."""
        import inspect

        cls = self.pm.load(kind, name)
        if kind == "metric" and "device" in inspect.signature(cls).parameters:
            settings = {"device": self._device(), **settings}
        return make_component(cls, settings, f"{what}: invalid {kind}")

    def _manipulator_of(self, method: MethodSpec) -> tuple[str, dict[str, Any]]:
        """The manipulator a method uses and the run's settings it takes (those of the run's manipulator only)."""
        name = method.manipulator or self.config.manipulator
        return name, self.config.manipulator_config if name == self.config.manipulator else {}

    def _reader(self):
        reader = self.pm.load("reader", self.config.reader)(**self.config.reader_config)
        for item in self.items:
            for name, value in item.expected.items():
                reader.check(name)
                classes = reader.attributes.get(name)
                if classes is not None and value not in classes:
                    raise InputError(f"item {item.id!r}: expected {name}={value!r} is not a class reader "
                                     f"{self.config.reader!r} knows; it reads {name} as one of {classes}")
        return reader

    def _device(self) -> str:
        """``--device cuda`` under a launcher: ``cuda:LOCAL_RANK``, wrapping round when processes outnumber GPUs."""
        if self.config.device == "cuda" and self.world_size > 1:
            import torch

            return f"cuda:{self.local_rank % max(torch.cuda.device_count(), 1)}"
        return self.config.device

    # ---------------------------------------------------------------------------------------------- running
    def my_items(self) -> list[ManifestItem]:
        return [it for i, it in enumerate(self.items) if i % self.world_size == self.rank]

    def pending(self) -> tuple[list[tuple[str, ManifestItem, MethodSpec]], int]:
        """Units of this rank still to run, and how many are already done."""
        todo, done = [], 0
        for model in self.config.models:
            for item in self.my_items():
                for method in self.methods:
                    old = read_result(result_path(self.out, model, method, item.id))
                    if old is not None and old.get("key") == unit_key(item, model, method, self.config):
                        done += 1
                    else:
                        todo.append((model, item, method))
        return todo, done

    def run(self) -> dict[str, Any] | None:
        """Run this rank's units; on rank 0, wait for all ranks, merge and report. Returns the summary on rank 0."""
        if self.rank != 0:
            return self._run()
        with OutputLock(self.out):
            check_stored_config(self.out, self.config)
            remove_stale_temps(self.out)
            write_manifest(self.items, self.out / "manifest.jsonl")
            atomic_write_text(self.out / "config.json", json.dumps(self.config.model_dump(), indent=2, default=str))
            return self._run()

    def _run(self) -> dict[str, Any] | None:
        todo, done = self.pending()
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo) + done, initial=done, desc=f"bench rank {self.rank}" if self.world_size > 1
                       else "bench", position=self.rank, unit="edit", dynamic_ncols=True)
        by_model: dict[str, list[tuple[ManifestItem, MethodSpec]]] = {}
        for model, item, method in todo:
            by_model.setdefault(model, []).append((item, method))
        for model, units in by_model.items():
            self._run_model(model, units, bar)
        if bar is not None:
            bar.close()
        self._barrier()
        if self.rank != 0:
            return None
        from eimsdk.bench.report import write_report

        results = collect_results(self.out, self.items, self.config)
        internal = None
        if self.config.internal:
            internal = self._internal()
            atomic_write_text(self.out / "internal.json", json.dumps(internal, indent=1, sort_keys=True))
        return write_report(self.out, results, self.config, internal=internal)

    def _run_model(self, model: str, units: list[tuple[ManifestItem, MethodSpec]], bar) -> None:
        from eimsdk.editor import Editor

        loaded = Editor.from_pretrained(model, device=self._device(), dtype=self.config.dtype, plugin_manager=self.pm)
        editors = {}  # one per manipulator the methods use (flowedit:manipulator=flowedit has its own)
        for _, method in units:
            name, shared = self._manipulator_of(method)
            if name not in editors:
                editors[name] = Editor(loaded.encoder, plugin_manager=self.pm, manipulator=name,
                                       manipulator_config=shared)
        by_item: dict[str, list[MethodSpec]] = {}
        items = {}
        for item, method in units:
            by_item.setdefault(item.id, []).append(method)
            items[item.id] = item
        for item_id, methods in by_item.items():
            item = items[item_id]
            source = _Source(next(iter(editors.values())), item, self.config, self.reader, self.out, model)
            for method in methods:
                self._run_unit(editors[self._manipulator_of(method)[0]], source, model, method)
                if bar is not None:
                    bar.set_postfix_str(f"{model_label(model)} {method.label} {item.id}", refresh=False)
                    bar.update(1)

    def _run_unit(self, editor, source: "_Source", model: str, method: MethodSpec) -> dict[str, Any]:
        from eimsdk.memory import guard

        item, cfg = source.item, self.config
        path = result_path(self.out, model, method, item.id)
        seed = item_seed(item.id, cfg.seed)
        record: dict[str, Any] = {
            "id": item.id, "model": model, "method": method.label, "attribute": item.attribute, "seed": seed,
            "key": unit_key(item, model, method, cfg), "source_prompt": item.source_prompt,
            "target_prompts": item.target_prompts, "expected": item.expected, "group": item.group_key,
            "source_read": source.read, "source_image": source.image_path, "edits": [],
            "worker": {"rank": self.rank, "world_size": self.world_size, "device": str(editor.encoder.device)},
        }
        try:
            guard(editor.encoder, source.latent.image_size, 2, "bench edit")  # an inversion/sampling step with CFG
            direction = editor.find_direction(None, [item.source_prompt] * len(item.target_prompts),
                                              item.target_prompts, method=method.finder, seed=seed,
                                              preserve_prompts=item.preserve_prompts, latent=source.latent,
                                              **method.finder_config)
            edits = [editor.apply(None, item.source_prompt, direction, s, latent=source.latent,
                                  **method.manipulator_config) for s in cfg.strengths]
        except EimsdkError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            write_result(path, record)
            return record
        record["find_cost"] = direction.meta["cost"]
        if cfg.save_directions or cfg.internal:
            direction.save(path.with_suffix("") / "direction.safetensors")
        for strength, edit in zip(cfg.strengths, edits):
            record["edits"].append(self._score_edit(source, strength, edit, path))
        write_result(path, record)
        return record

    def _score_edit(self, source: "_Source", strength: float, edit, path: Path) -> dict[str, Any]:
        from eimsdk.metrics.disentanglement import reader_changes
        from eimsdk.records import save_image

        item = source.item
        image = edit.image
        pixels = edit.pixels[0]  # (3, H, W) in [-1, 1]
        read = self.reader.read([image])[0]
        expected = item.expected
        success = all(_same(read.get(k), v, self.config.numeric_tolerance) for k, v in expected.items()) if expected \
            else None
        preserved = {a: _same(read[a], source.read[a], self.config.numeric_tolerance) for a in source.read
                     if a not in expected and a != item.attribute}
        scores = {k: _r(v) for metric in self.metrics for k, v in metric(source.pixels, pixels, item=item).items()}
        rec: dict[str, Any] = {
            "strength": strength, "read": read, "success": success, "preserved": preserved,
            "preserved_all": all(preserved.values()) if preserved else None,
            "changes": reader_changes(source.read, read), "deltas": self._deltas(source, image, read),
            "metrics": scores, "cost": edit.cost.as_dict(),
        }
        if self.config.save_images:
            name = f"s{strength:+g}.png"
            save_image(image, path.with_suffix("") / name)
            rec["image"] = str((path.with_suffix("") / name).relative_to(self.out))
        return rec

    def _deltas(self, source: "_Source", image, read: dict[str, Any]) -> dict[str, float]:
        """Reader deltas: total variation between class probabilities when the reader gives them, else changes."""
        from eimsdk.metrics.disentanglement import reader_changes

        if source.probabilities is None:
            return reader_changes(source.read, read)
        after = self.reader.probabilities([image])[0]
        return {a: _r(0.5 * sum(abs(p.get(k, 0.0) - after[a].get(k, 0.0)) for k in set(p) | set(after[a])))
                for a, p in source.probabilities.items()}

    # ---------------------------------------------------------------------------------------------- merging
    def _barrier(self) -> None:
        if self.world_size <= 1:
            return
        from datetime import timedelta

        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=timedelta(days=1))
        dist.barrier()

    def _internal(self) -> dict[str, dict[str, Any]]:
        """The reader-free score per model and method, on the first ``internal`` sources edited along >= 2 attributes."""
        from eimsdk.editor import Editor
        from eimsdk.metrics.internal import ResponseOverlap
        from eimsdk.records import Direction

        groups: dict[str, list[ManifestItem]] = {}
        for item in self.items:
            groups.setdefault(item.group_key, []).append(item)
        chosen = [g for g in groups.values() if len({i.attribute for i in g}) >= 2][: self.config.internal]
        if not chosen:
            return {}
        attributes = sorted(set.intersection(*({i.attribute for i in g} for g in chosen)))
        if len(attributes) < 2:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for model in self.config.models:
            editor = Editor.from_pretrained(model, device=self._device(), dtype=self.config.dtype,
                                            plugin_manager=self.pm)
            firsts = [g[0] for g in chosen]
            sizes = {f.size or self.config.size for f in firsts}
            latent = editor.encoder.encode([f.load_source() for f in firsts], [f.source_prompt for f in firsts],
                                           size=sizes.pop() if len(sizes) == 1 else None)
            out[model_label(model)] = {}
            for method in self.methods:
                try:  # a unit finished by a run without --internal/--save-directions kept no direction
                    directions = {a: [Direction.load(result_path(self.out, model, method, next(
                        i for i in g if i.attribute == a).id).with_suffix("") / "direction.safetensors",
                        device=editor.encoder.device) for g in chosen] for a in attributes}
                    res = ResponseOverlap()(editor.encoder, latent, directions)
                except EimsdkError as exc:
                    out[model_label(model)][method.label] = {"error": str(exc)}
                    continue
                out[model_label(model)][method.label] = {**res.as_dict(), "sources": len(chosen),
                                                         "source_ids": [g[0].group_key for g in chosen]}
        return out


def collect_results(out: str | os.PathLike, items: Sequence[ManifestItem], config: BenchConfig
                    ) -> list[dict[str, Any]]:
    """Every finished unit's result in manifest order (model, method, item); writes ``OUT/results.jsonl``.

    Needs no model or plugin: a unit is identified by its path and key. Raises when a unit is missing.
    """
    out = Path(out)
    results, missing = [], []
    for model in config.models:
        for method in (parse_method(m) for m in config.methods):
            for item in items:
                rec = read_result(result_path(out, model, method, item.id))
                if rec is None or rec.get("key") != unit_key(item, model, method, config):
                    missing.append(f"{model_label(model)}/{method.slug}/{item.id}")
                else:
                    results.append(rec)
    if missing:
        raise EimsdkError(f"{len(missing)} result(s) are missing (first: {missing[:3]}); a run or a rank did not "
                          "finish. Run the same command again: finished items are kept")
    atomic_write_text(out / "results.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in results))
    return results


class _Source:
    """One item's source under one model: latent, pixels at model size, readings."""

    def __init__(self, editor, item: ManifestItem, config: BenchConfig, reader, out: Path, model: str) -> None:
        from eimsdk.images import to_pil
        from eimsdk.records import save_image

        self.item = item
        image = item.load_source()
        self.latent = editor.encode(image, item.source_prompt, size=item.size or config.size)
        self.pixels = editor.source_pixels(image, self.latent)[0]  # (3, H, W) in [-1, 1]
        self.pil = to_pil(self.pixels[None])[0]
        self.read = reader.read([self.pil])[0]
        self.probabilities = reader.probabilities([self.pil])[0] if hasattr(reader, "probabilities") else None
        self.image_path = None
        if config.save_images:
            rel = Path("items") / model_label(model) / "_sources" / f"{item.id}.png"
            if not (out / rel).is_file():
                save_image(self.pil, out / rel)
            self.image_path = str(rel)


def _same(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= tol
    return a == b


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 6)
