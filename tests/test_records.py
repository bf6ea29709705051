"""Conditioning arithmetic, atomic writes, and the cost timer."""

from __future__ import annotations

import os

import pytest
import torch

from eimsdk.errors import DirectionMismatchError, InputError
from eimsdk.cost import Timer
from eimsdk.records import Conditioning, Direction, atomic_write, atomic_write_text


def _cond(batch=1, length=4, seed=0, mask_len=2):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, length)
    mask[:, :mask_len] = 1
    return Conditioning({"prompt_embeds": torch.randn(batch, length, 3, generator=g),
                         "pooled_prompt_embeds": torch.randn(batch, 5, generator=g)}, {"prompt_embeds": mask})


def test_arithmetic_and_mask_union():
    a, b = _cond(seed=0, mask_len=2), _cond(seed=1, mask_len=3)
    s = a + b
    torch.testing.assert_close(s.embeds["prompt_embeds"], a.embeds["prompt_embeds"] + b.embeds["prompt_embeds"])
    assert s.masks["prompt_embeds"].sum() == 3, "masks combine by union"
    torch.testing.assert_close((a - a).flat(), torch.zeros_like(a.flat()))
    torch.testing.assert_close((2.0 * a).flat(), 2 * a.flat())
    torch.testing.assert_close((-a).flat(), -a.flat())


def test_masked_zeroes_padding():
    c = _cond(mask_len=2).masked()
    assert torch.all(c.embeds["prompt_embeds"][:, 2:] == 0)
    assert torch.any(c.embeds["prompt_embeds"][:, :2] != 0)


def test_mismatched_components_are_refused():
    a = _cond()
    other = Conditioning({"prompt_embeds": torch.zeros(1, 4, 3)})
    with pytest.raises(DirectionMismatchError, match="different components"):
        a + other
    wrong = Conditioning({"prompt_embeds": torch.zeros(1, 4, 7), "pooled_prompt_embeds": torch.zeros(1, 5)})
    with pytest.raises(DirectionMismatchError, match="shape"):
        a + wrong


def test_batch_helpers():
    c = _cond(batch=2)
    assert c.repeat(3).batch_size == 6
    torch.testing.assert_close(c.repeat(3)[1].flat(), c[0].flat())
    assert _cond(batch=1).expand_to(4).batch_size == 4
    with pytest.raises(InputError):
        c.expand_to(3)
    cat = Conditioning.cat([c[0], c[1]])
    torch.testing.assert_close(cat.flat(), c.flat())


def test_direction_requires_batch_one():
    with pytest.raises(InputError, match="leading batch dimension of 1"):
        Direction(torch.zeros(2, 4, 2, 2), _cond())
    d = Direction(torch.ones(1, 4, 2, 2), _cond(), {"signature": {"family": "x"}})
    assert torch.count_nonzero(d.only("dc").dz) == 0
    assert float(d.only("dz").dc.norm()) == 0.0


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"], "no temporary file may be left behind"


def test_timer_sees_a_large_allocation():
    with Timer() as t:
        x = torch.ones(64, 1024, 1024)  # 256 MiB
        x += 1
    assert t.seconds > 0
    assert t.peak >= 256 * 2**20
