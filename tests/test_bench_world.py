"""A pixel-space fake world for the benchmark tests, registered as a plugin, with known answers.

The fake backend's latent IS the image (decode = identity), so an edit's outcome is exact: the ``fake-oracle``
finder reads the toy scene from the prompts and returns ``dz = render(target) - render(source)`` (exact for
scenes without jitter), ``fake-null`` returns a zero direction, ``fake-noisy`` adds seeded noise (to test
seeding). The ``fake-add`` manipulator adds ``strength * dz``. Other test modules import this one; subprocesses
find it through an entry point (see :func:`plugin_env`).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import BaseModel, Field

import eimsdk
from eimsdk.bench.manifest import ManifestItem, Region
from eimsdk.interfaces import DirectionFinder, Encoder, Manipulator
from eimsdk.records import Conditioning, Direction
from eimsdk.records import save_image
from eimsdk.tokenizers import WORDS
from eimsdk_toy.bench import changed_region

CAPTION = re.compile(r"^a (\w+) (\w+) (\w+) at the (\w+ \w+) on a (\w+) background$")


def parse_caption(prompt: str):
    from eimsdk_toy.scenes import SceneSpec

    m = CAPTION.match(prompt)
    assert m, prompt
    size, colour, shape, position, background = m.groups()
    return SceneSpec(size=size, colour=colour, shape=shape, position=position, background=background)


def scene_tensor(spec) -> torch.Tensor:
    from eimsdk_toy.scenes import render

    arr = np.asarray(render(spec), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None]  # (1, 3, 32, 32)


class FakePixelEncoder(Encoder):
    """Latent = pixels; a prompt embeds as one-hot words; eps_hat = 0.1 z_t."""

    family = "fake-pixels"
    pipeline_classes = ("FakePixelPipeline",)
    tokens = 16

    def __init__(self, model_id: str = "fake") -> None:
        super().__init__()
        self.model_id = model_id

    @classmethod
    def from_pretrained(cls, path, *, device="cpu", dtype=torch.float32, **kwargs):
        assert (Path(path) / "model_index.json").is_file()
        return cls(str(path))

    image_multiple = 8
    default_image_size = (32, 32)
    max_prompt_tokens = 16
    latent_channels = 3

    def encode_images(self, pixels):
        return pixels.clone()

    def decode_latents(self, z0):
        return z0.clamp(-1, 1)

    def encode_prompts(self, prompts):
        ids = torch.zeros(len(prompts), self.tokens, dtype=torch.long)
        mask = torch.zeros(len(prompts), self.tokens, dtype=torch.long)
        for b, p in enumerate(prompts):
            words = [WORDS.index(w) + 1 if w in WORDS else 0 for w in p.split()][: self.tokens]
            ids[b, : len(words)] = torch.tensor(words, dtype=torch.long)
            mask[b, : len(words)] = 1
        emb = torch.nn.functional.one_hot(ids, len(WORDS) + 1).float()  # (B, L, V)
        return Conditioning({"prompt_embeds": emb}, {"prompt_embeds": mask})

    def alpha_sigma(self, t):
        return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)

    def timesteps(self, num_steps, t_start=1.0, *, latents=None):
        return torch.linspace(t_start, 0.0, num_steps + 1)

    def _predict_eps(self, z_t, t, cond):
        return 0.1 * z_t

    def prepare_latents(self, batch, height, width, generator=None, latents=None):
        return torch.randn((batch, 3, height, width), generator=generator) if latents is None else latents

    def generate(self, prompts, **kw):
        return torch.zeros(len(prompts), 3, kw["height"], kw["width"])


def _direction(encoder, dz, source_prompts, target_prompts, name):
    dc = encoder.encode_prompts(target_prompts[:1]) - encoder.encode_prompts(source_prompts[:1])
    return Direction(dz, dc, {"signature": encoder.signature(), "model_id": encoder.model_id, "method": name})


class _GainConfig(BaseModel):
    gain: float = Field(1.0, gt=0.0, le=10.0)


class OracleFinder(DirectionFinder):
    name = "fake-oracle"
    Config = _GainConfig

    def find(self, encoder, latent, target_prompts, *, source_prompts=None, preserve_prompts=(), seed=0):
        source_prompts = source_prompts or latent.prompts
        encoder.predict_eps(latent.z0, 0.5, latent.cond)  # one counted model evaluation
        dz = scene_tensor(parse_caption(target_prompts[0])) - scene_tensor(parse_caption(source_prompts[0]))
        return _direction(encoder, dz * self.config.gain, source_prompts, target_prompts, self.name)


class NullFinder(OracleFinder):
    name = "fake-null"

    def find(self, encoder, latent, target_prompts, *, source_prompts=None, preserve_prompts=(), seed=0):
        source_prompts = source_prompts or latent.prompts
        return _direction(encoder, torch.zeros_like(latent.z0[:1]), source_prompts, target_prompts, self.name)


class NoisyFinder(OracleFinder):
    """The oracle plus noise drawn from ``seed`` (and from the global RNG, which the runner seeds too)."""

    name = "fake-noisy"

    def find(self, encoder, latent, target_prompts, *, source_prompts=None, preserve_prompts=(), seed=0):
        d = super().find(encoder, latent, target_prompts, source_prompts=source_prompts, seed=seed)
        g = torch.Generator().manual_seed(seed)
        noise = 0.6 * torch.randn(d.dz.shape, generator=g) + 0.3 * torch.randn(d.dz.shape)
        return Direction(d.dz + noise, d.dc, d.meta)


class _AddConfig(BaseModel):
    scale: float = Field(1.0, ge=0.0, le=10.0)


class AddManipulator(Manipulator):
    name = "fake-add"
    Config = _AddConfig

    def apply(self, encoder, latent, edits):
        z = latent.z0 + self.config.scale * sum(s * d.dz for d, s in edits)
        encoder.predict_eps(z, 0.1, latent.cond)
        return z


@eimsdk.hookimpl
def register_backends(register):
    register("fake-pixels", FakePixelEncoder, pipeline_classes=FakePixelEncoder.pipeline_classes)


@eimsdk.hookimpl
def register_direction_finders(register):
    for cls in (OracleFinder, NullFinder, NoisyFinder):
        register(cls.name, cls)


@eimsdk.hookimpl
def register_manipulators(register):
    register("fake-add", AddManipulator)


# ------------------------------------------------------------------------------------------ helpers for tests
def fake_model(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FakePixelPipeline"}))
    return str(folder)


def plugin_manager():
    """The installed plugins plus this fake world."""
    from eimsdk.plugins import PluginManager

    pm = PluginManager()
    pm.register(sys.modules[__name__], "bench-fakes")
    return pm


def plugin_env(tmp: Path) -> dict[str, str]:
    """Environment in which a subprocess's plugin discovery finds this module through an entry point."""
    dist = tmp / "bench_fakes-0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-fakes\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(f"[eimsdk]\nbench-fakes = {__name__}\n")
    path = os.pathsep.join([str(tmp), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


CLEAN_IMAGES = Path(tempfile.gettempdir()) / f"eimsdk-clean-scenes-{os.getpid()}"
atexit.register(shutil.rmtree, CLEAN_IMAGES, True)


def clean_items(n_scenes: int = 2) -> list[ManifestItem]:
    """Toy tasks on scenes without jitter (so the oracle is exact): every attribute of ``n_scenes`` scenes.

    The sources are written once per test process to :data:`CLEAN_IMAGES`.
    """
    from eimsdk_toy.scenes import ATTRIBUTES, SceneSpec, caption, render

    items = []
    rng = np.random.default_rng(7)
    for s in range(n_scenes):
        spec = SceneSpec(**{a: c[int(rng.integers(len(c)))] for a, c in ATTRIBUTES.items()})
        image = CLEAN_IMAGES / f"clean-{s}.png"
        if not image.is_file():
            save_image(render(spec), image)
        for a, classes in ATTRIBUTES.items():
            new = next(c for c in classes if c != getattr(spec, a))
            target = spec.model_copy(update={a: new})
            items.append(ManifestItem(
                id=f"clean-{s}-{a}", image=str(image), source_prompt=caption(spec), attribute=a,
                target_prompts=[caption(target)], expected={a: new}, source_values=spec.attributes(),
                region=Region.from_mask(changed_region(render(spec), render(target))), group=f"clean-{s}"))
    return items


def strip_timing(rec: dict) -> dict:
    """A result without what legitimately differs between runs (seconds, memory, which worker ran it)."""
    rec = json.loads(json.dumps(rec))
    rec.pop("worker", None)
    for cost in [rec.get("find_cost", {})] + [e.get("cost", {}) for e in rec.get("edits", [])]:
        cost.pop("seconds", None)
        cost.pop("peak_memory_mb", None)
    return rec


# ------------------------------------------------------------------------------------------ the world's own tests
def test_oracle_edit_reads_as_the_target():
    from eimsdk.editor import Editor
    from eimsdk_toy.readers import ToyReader

    item = clean_items(1)[1]
    editor = Editor(FakePixelEncoder(), plugin_manager=plugin_manager(), manipulator="fake-add")
    result = editor.edit(item.load_source(), item.source_prompt, item.target_prompts[0], method="fake-oracle", seed=3)
    read = ToyReader().read(result.images)[0]
    assert read == {**item.source_values, **item.expected}
    assert result.find_cost.model_evals == 1 and result.cost.model_evals == 1


def test_fake_world_is_a_plugin():
    pm = plugin_manager()
    assert pm.plugins["bench-fakes"].status == "ok", pm.plugins["bench-fakes"].error
    assert pm.load("finder", "fake-oracle") is OracleFinder


@pytest.mark.parametrize("seed", [0, 5])
def test_noisy_finder_depends_on_its_seed_only(seed):
    item = clean_items(1)[0]
    enc = FakePixelEncoder()
    latent = enc.encode(item.load_source(), item.source_prompt)
    torch.manual_seed(seed)
    a = NoisyFinder().find(enc, latent, item.target_prompts, seed=seed)
    torch.manual_seed(seed)
    b = NoisyFinder().find(enc, latent, item.target_prompts, seed=seed)
    assert torch.equal(a.dz, b.dz)
