"""Robustness: generated prompts, numbers, settings and output paths through the CLI (in-process) and the API."""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from robustness import assert_refused, digest_tree, run_cli, stop_at_model  # noqa: F401 - fixture

from eimsdk.errors import InputError
from eimsdk.images import check_prompts
from eimsdk.settings import MAX_SEED, check_strength, parse_strengths

SUITE = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FINDER_KEYS = ["lam", "mu", "gn_steps", "cg_iters", "cg_tol", "t_min", "t_max", "num_timesteps", "weighting",
               "curvature", "seed"]
MANIPULATOR_KEYS = ["t_edit", "num_steps", "guidance_scale", "ablation", "invert_under", "inversion_fixed_point"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "in.png"
    Image.new("RGB", (32, 32), "red").save(path)
    return path


@pytest.fixture(scope="module")
def toy_encoder():
    from eimsdk.editor import Editor

    return Editor.from_pretrained("toy-pixart").encoder


def edit(source: Path, out: Path, *extra: str) -> list[str]:
    return ["edit", "--image", str(source), "--prompt", "a red circle", "--target", "a blue circle", *extra,
            "--out", str(out)]


@SUITE
@given(st.lists(st.text(max_size=200), min_size=0, max_size=3))
def test_prompts_are_accepted_or_refused_in_one_line(toy_encoder, prompts):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = check_prompts(prompts, None, toy_encoder)
        except InputError as exc:
            assert "prompt" in str(exc) and "\n" not in str(exc)
            assert not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts)
        else:
            assert out == prompts and all(p.strip() for p in prompts)
    assert all(issubclass(w.category, UserWarning) and "\n" not in str(w.message) for w in caught)


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
                    st.text(max_size=12), st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", "", " 1"]))


@SUITE
@given(numbers)
def test_cli_strength(capsys, stop_at_model, source, value):
    with tempfile.TemporaryDirectory() as tmp:
        code, err = run_cli(capsys, edit(source, Path(tmp) / "o.png", f"--strength={value}"))
        try:
            ok = math.isfinite(float(str(value)))
        except ValueError:
            ok = False
        if ok:
            assert code is None, err
        else:
            assert_refused(code, err, "--strength")
        assert digest_tree(Path(tmp)) == {}


@SUITE
@given(st.one_of(st.integers(-2**70, 2**70), st.text(max_size=30)))
def test_cli_seed(capsys, stop_at_model, source, value):
    with tempfile.TemporaryDirectory() as tmp:
        code, err = run_cli(capsys, edit(source, Path(tmp) / "o.png", f"--seed={value}"))
        try:
            ok = 0 <= int(str(value)) <= MAX_SEED
        except ValueError:
            ok = False
        if ok:
            assert code is None, err
        else:
            assert_refused(code, err, "--seed")


json_values = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False),
                        st.text(max_size=8), st.lists(st.integers(), max_size=2))


@SUITE
@given(st.lists(st.tuples(st.one_of(st.sampled_from(FINDER_KEYS + MANIPULATOR_KEYS), st.text(max_size=8)),
                          json_values), max_size=3))
def test_cli_settings(capsys, stop_at_model, source, pairs):
    from eimsdk.methods.hsds import HSDSFinder
    from eimsdk.methods.manipulate import LinearJointManipulator

    items = [f"{k}={json.dumps(v)}" for k, v in pairs]
    argv = [a for item in items for a in ("--set", item)]
    with tempfile.TemporaryDirectory() as tmp:
        code, err = run_cli(capsys, edit(source, Path(tmp) / "o.png", *argv))
    if code is None:  # accepted: then every setting is valid for the finder or the manipulator it routes to
        for key, value in pairs:
            target = HSDSFinder if key in FINDER_KEYS else LinearJointManipulator
            target(**{key: value})
    else:
        keys = [item.partition("=")[0].strip() for item in items]
        assert_refused(code, err, "--set", *[k for k in keys if k])


@SUITE
@given(st.text(max_size=30))
def test_sweep_strengths_parse_or_refuse(text):
    try:
        out = parse_strengths(text)
    except InputError as exc:
        assert "--strengths" in str(exc) and "\n" not in str(exc)
    else:
        assert out and all(math.isfinite(s) for s in out)


@SUITE
@given(st.one_of(st.floats(allow_nan=True), st.integers(-10**20, 10**20)),
       st.sampled_from([float, np.float32, np.float64, np.int64, "torch", "array0"]))
def test_api_strength_scalars(value, kind):
    import torch

    try:
        scalar = torch.tensor(value) if kind == "torch" else np.array(value) if kind == "array0" else kind(value)
    except (OverflowError, ValueError, RuntimeError):
        return  # not representable in that type at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            got = check_strength(scalar)
        except InputError as exc:
            assert "strength" in str(exc)
            assert not math.isfinite(float(scalar))
        else:
            assert math.isfinite(got) and got == pytest.approx(float(scalar))


PATH_PARTS = st.sampled_from(["out.png", "o.jpg", "o.tiff", "o.webp", "o.xyz", "noext", "dir", "a_file",
                              "a_file/x.png", "new/deeper/o.png", "in.png", "link.png", "sp ace.png",
                              "\u00e9t\u00e9.png", ".", "..", "/proc/eimsdk/o.png", "dir/", ""])


@SUITE
@given(PATH_PARTS)
def test_cli_output_paths(capsys, stop_at_model, part):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        Image.new("RGB", (16, 16), "red").save(root / "in.png")
        (root / "dir").mkdir()
        (root / "a_file").write_text("x")
        os.link(root / "in.png", root / "link.png")
        before = digest_tree(root)
        out = part if part.startswith("/") else str(root / part) if part else ""
        code, err = run_cli(capsys, ["edit", "--image", str(root / "in.png"), "--prompt", "a red circle",
                                     "--target", "a blue circle", "--out", out])
        if code is not None:
            assert_refused(code, err, "--out")
        else:
            assert Path(out).suffix.lower() in (".png", ".jpg", ".tiff", ".webp") and not Path(out).is_dir()
            assert not os.path.exists(out) or not os.path.samefile(out, root / "in.png")
        assert digest_tree(root) == before and sorted(p.name for p in root.iterdir()) == \
            sorted(["in.png", "dir", "a_file", "link.png"])
