"""Directions as artefacts: bit-exact save/load, tampering and mismatches refused, never unpickled, portable."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from eimsdk import Editor
from eimsdk.errors import DirectionMismatchError, InputError
from eimsdk.methods.hsds import HSDSFinder
from eimsdk.methods.manipulate import LinearJointManipulator
from eimsdk.records import Direction
from eimsdk.testing.analytic import GaussianEncoder


@pytest.fixture(scope="module")
def found():
    enc = GaussianEncoder()
    latent = enc.encode(enc.decode_latents(enc.mean(enc.encode_prompts(["a red circle"]))), "a red circle")
    return enc, latent, HSDSFinder(num_timesteps=2, cg_iters=2).find(enc, latent, ["a blue circle"],
                                                                    preserve_prompts=["a circle"])


def _assert_identical(a: Direction, b: Direction) -> None:
    assert a.dz.dtype == b.dz.dtype and torch.equal(a.dz, b.dz)
    assert set(a.dc.embeds) == set(b.dc.embeds) and set(a.dc.masks) == set(b.dc.masks)
    for k in a.dc.embeds:
        assert a.dc.embeds[k].dtype == b.dc.embeds[k].dtype and torch.equal(a.dc.embeds[k], b.dc.embeds[k])
    for k in a.dc.masks:
        assert a.dc.masks[k].dtype == b.dc.masks[k].dtype and torch.equal(a.dc.masks[k], b.dc.masks[k])


def test_round_trip_is_bit_exact_with_its_metadata(found, tmp_path):
    _, _, d = found
    path = d.save(tmp_path / "colour")
    assert path.name == "colour.safetensors" and path.with_suffix(".json").is_file()
    back = Direction.load(path)
    _assert_identical(d, back)
    assert back.meta == json.loads(json.dumps(d.meta))
    assert json.loads(path.with_suffix(".json").read_text())["cost"] == d.meta["cost"]
    for key in ("family", "model_id", "signature", "prompts", "config", "timesteps", "eimsdk_version", "image_size"):
        assert key in back.meta


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_round_trip_keeps_every_dtype(found, tmp_path, dtype):
    _, _, d = found
    d = d.to(dtype)
    _assert_identical(d, Direction.load(d.save(tmp_path / "d.safetensors")))


def _flip_byte(path, offset_from_end):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def test_tampered_tensors_are_refused(found, tmp_path):
    _, _, d = found
    path = d.save(tmp_path / "d.safetensors")
    _flip_byte(path, 3)
    with pytest.raises(DirectionMismatchError, match="integrity"):
        Direction.load(path)


def test_tampered_metadata_is_refused(found, tmp_path):
    """Re-labelling the model in the header (same length, so the file stays well formed) breaks the digest."""
    _, _, d = found
    path = d.save(tmp_path / "d.safetensors")
    raw = path.read_bytes()
    assert raw.count(b'\\"family\\": \\"analytic\\"') >= 1
    path.write_bytes(raw.replace(b'\\"family\\": \\"analytic\\"', b'\\"family\\": \\"pixartxx\\"'))
    with pytest.raises(DirectionMismatchError, match="integrity"):
        Direction.load(path)


def test_truncated_and_foreign_files_are_refused(found, tmp_path):
    _, _, d = found
    path = d.save(tmp_path / "d.safetensors")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DirectionMismatchError, match="not a readable safetensors"):
        Direction.load(path)
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(DirectionMismatchError, match="not an eimsdk direction"):
        Direction.load(tmp_path / "model.safetensors")
    with pytest.raises(InputError, match="does not exist"):
        Direction.load(tmp_path / "missing.safetensors")


def test_loading_never_unpickles(found, tmp_path, monkeypatch):
    _, _, d = found
    path = d.save(tmp_path / "d.safetensors")

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled')",))

    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"dz": Boom()}))
    torch.save({"dz": torch.zeros(1, 4, 8, 8)}, tmp_path / "torch.safetensors")

    def forbidden(*args, **kwargs):
        raise AssertionError("Direction.load must never unpickle")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    _assert_identical(d, Direction.load(path))
    for bad in (evil, tmp_path / "torch.safetensors"):
        with pytest.raises(DirectionMismatchError):
            Direction.load(bad)


def test_newer_format_is_refused(found, tmp_path, monkeypatch):
    import eimsdk.records as records

    _, _, d = found
    monkeypatch.setattr(records, "FORMAT_VERSION", 99)
    path = d.save(tmp_path / "future.safetensors")
    monkeypatch.setattr(records, "FORMAT_VERSION", 1)
    with pytest.raises(DirectionMismatchError, match="upgrade eimsdk"):
        Direction.load(path)


def test_a_direction_does_not_fit_another_model(found, tiny_pipeline_path, scene_image, tmp_path):
    enc, latent, d = found
    loaded = Direction.load(d.save(tmp_path / "d.safetensors"))
    pixart = Editor.from_pretrained(tiny_pipeline_path("pixart"))
    with pytest.raises(DirectionMismatchError, match="'analytic' model .* 'pixart' model"):
        pixart.apply(scene_image, "a red circle", loaded, 1.0)
    other_words = GaussianEncoder(attributes={"colour": ["red", "blue"], "mood": ["happy", "sad"]})
    with pytest.raises(DirectionMismatchError, match="cond_shapes"):
        loaded.check_fits(other_words)
    bigger = GaussianEncoder(latent_shape=(4, 16, 16))
    big_latent = bigger.encode(torch.zeros(1, 3, 32, 32), "a red circle")
    with pytest.raises(DirectionMismatchError, match="latent shape"):
        LinearJointManipulator().apply(bigger, big_latent, [(loaded, 1.0)])


def test_a_direction_found_on_one_image_edits_another(found, tmp_path):
    enc, _, d = found
    loaded = Direction.load(d.save(tmp_path / "d.safetensors"))
    g = torch.Generator().manual_seed(3)
    z0 = enc.mean(enc.encode_prompts(["a red circle on the left"])) + 0.3 * torch.randn(1, 4, 8, 8, generator=g)
    other = enc.encode(enc.decode_latents(z0), "a red circle on the left")
    m = LinearJointManipulator(num_steps=10)
    moved = m.apply(enc, other, [(loaded, 1.0)]) - m.apply(enc, other, [(loaded, 0.0)])
    blue, red = (enc.patterns[:, enc.word_index[w]].float() for w in ("blue", "red"))
    assert float(moved.flatten() @ (blue - red)) > 0.5 * float((blue - red).norm() ** 2)
