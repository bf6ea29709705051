"""Issue 14, one test per defect: every bad input gets one line and exit 2, nothing is overwritten or reused stale."""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eimsdk.cli import main
from eimsdk.errors import DirectionMismatchError, InputError
from eimsdk.images import check_prompts, load_image, to_model_tensor
from eimsdk.settings import check_strength, route_settings
from eimsdk.threads import choose_num_threads

ROOT = Path(__file__).resolve().parents[1]


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels and holds no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def photo(path: Path, h: int, w: int, fmt: str | None = None) -> Path:
    rng = np.random.default_rng(h * 7 + w)
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // max(w, 1), y * 255 // max(h, 1), rng.integers(0, 255, (h, w))], -1).astype(np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit status, stdout, stderr), argparse's own exits included."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command gets as far as loading a model."""
    from eimsdk.editor import Editor

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(Editor, "from_pretrained", classmethod(lambda cls, *a, **k: refuse()))


@pytest.fixture(scope="module")
def toy_editor():
    from eimsdk.editor import Editor

    return Editor.from_pretrained("toy-pixart")


# ------------------------------------------------------------------------------------------------ 1. size policy
def test_default_size_is_the_models_own_with_aspect_kept():
    square = Image.new("RGB", (256, 256), "red")
    x, original = to_model_tensor(square, multiple=4, default_size=(32, 32))
    assert tuple(x.shape[-2:]) == (32, 32) and original == [(256, 256)]
    wide = Image.new("RGB", (4000, 3000), "red")
    x, _ = to_model_tensor(wide, multiple=4, default_size=(32, 32))
    h, w = x.shape[-2:]
    assert h * w <= 32 * 32 and h % 4 == 0 and w % 4 == 0
    assert abs(w / h - 4 / 3) < 0.2
    # An explicit size is honoured, larger than the model's own too.
    x, _ = to_model_tensor(square, multiple=4, size=(64, 64), default_size=(32, 32))
    assert tuple(x.shape[-2:]) == (64, 64)


def test_toy_model_encodes_a_photo_at_its_own_size(toy_editor, tmp_path):
    latent = toy_editor.encode(photo(tmp_path / "p.png", 256, 256), "a red circle")
    assert latent.image_size == toy_editor.encoder.default_image_size


@pytest.mark.parametrize("h, w", [(256, 256), (3000, 4000)])
def test_cli_edit_of_a_photograph_stays_under_2_gb(tmp_path, h, w):
    image = photo(tmp_path / "photo.jpg", h, w, "JPEG")
    code = ("import resource, sys; from eimsdk.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, "edit", "toy-pixart", "--image", str(image), "--prompt",
                          "a red circle", "--target", "a blue circle", "--set", "num_steps=2", "--set", "cg_iters=1",
                          "--out", str(tmp_path / "edited.png")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    peak_kb = int(out.stdout.split()[-1])
    assert peak_kb < 2 * 1024 * 1024
    with Image.open(tmp_path / "edited.png") as im:
        assert im.size[0] * im.size[1] <= 32 * 32


def test_decompression_bomb_is_one_line(tmp_path, capsys, no_model):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(20000, 20000))
    assert bomb.stat().st_size < 100
    with pytest.raises(InputError, match="declares .*pixels"):
        load_image(bomb)
    code, _, err = cli(capsys, "edit", "--image", str(bomb), "--prompt", "a", "--target", "b", "--out",
                       str(tmp_path / "o.png"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--image" in err


def test_animated_gif_is_refused_naming_frames(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue", "green")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match="animated GIF with 3 frames"):
        load_image(tmp_path / "anim.gif")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "still.gif")
    assert load_image(tmp_path / "still.gif").size == (8, 8)


@pytest.mark.parametrize("suffix, fmt", [(".tiff", "TIFF"), (".tif", "TIFF"), (".jpg", "JPEG"), (".webp", "WEBP"),
                                         (".bmp", "BMP"), (".png", "PNG")])
def test_output_is_written_in_the_format_its_suffix_names(tmp_path, suffix, fmt):
    from eimsdk.records import save_image

    path = save_image(Image.new("RGB", (8, 8), "red"), tmp_path / f"o{suffix}")
    with Image.open(path) as im:
        assert im.format == fmt


def test_unknown_output_suffix_is_refused_before_the_model(tmp_path, capsys, no_model):
    image = photo(tmp_path / "in.png", 16, 16)
    code, _, err = cli(capsys, "edit", "--image", str(image), "--prompt", "a", "--target", "b", "--out",
                       str(tmp_path / "o.xyz"))
    assert code == 2 and "'.xyz'" in err and not (tmp_path / "o.xyz").exists()


# ------------------------------------------------------------------------------------------------ 2. plugins
def _fake_dist(root: Path, name: str, module_source: str, entry: str | None = None, target: str | None = None) -> None:
    (root / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[eimsdk]\n{entry or name} = {target or name}\n")


def _plugins(extra: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    if extra is not None:
        full["PYTHONPATH"] = str(extra) + os.pathsep + full.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "eimsdk", "plugins", "--json"], capture_output=True, text=True,
                          env=full, timeout=120)


def test_invalid_entry_point_name_fails_only_that_plugin(tmp_path):
    _fake_dist(tmp_path, "badname_dist", "", entry="BadName", target="json")
    out = _plugins(tmp_path)
    assert out.returncode == 0, out.stderr
    report = {r["name"]: r for r in json.loads(out.stdout)}
    assert report["BadName"]["status"] == "failed" and "invalid" in report["BadName"]["error"]
    assert all(report[n]["status"] == "ok" for n in ("core", "pixart", "toy"))


def test_third_party_plugin_cannot_take_a_builtin_name(tmp_path):
    _fake_dist(tmp_path, "aaa_hijack", """
        import eimsdk

        @eimsdk.hookimpl
        def register_direction_finders(register):
            register("hsds", "eimsdk.methods.baselines:TextOnlyFinder")
    """)
    report = {r["name"]: r for r in json.loads(_plugins(tmp_path).stdout)}
    assert report["aaa_hijack"]["status"] == "failed"
    assert "plugin 'core'" in report["aaa_hijack"]["error"] and "plugin 'aaa_hijack'" in report["aaa_hijack"]["error"]
    assert report["core"]["status"] == "ok" and "hsds" in report["core"]["provides"]["finder"]


@pytest.mark.parametrize("env, says", [
    ({"EIMSDK_PLUGINS_BLOCK": "nosuch"}, "'nosuch', which is not an installed plugin"),
    ({"EIMSDK_PLUGINS_ALLOW": ""}, "EIMSDK_PLUGINS_ALLOW='' names no plugin; it is ignored"),
    ({"EIMSDK_PLUGINS_STRICT": "maybe"}, "EIMSDK_PLUGINS_STRICT='maybe' is not understood"),
])
def test_odd_plugin_environment_gets_a_clear_message(env, says):
    out = _plugins(**env)
    assert out.returncode == 0 and says in out.stderr
    assert out.stderr.startswith("eimsdk: warning: ") and len(out.stderr.strip().splitlines()) == 1
    report = {r["name"]: r["status"] for r in json.loads(out.stdout)}
    assert report["core"] == "ok"  # an empty ALLOW no longer blocks everything


def test_strict_true_is_strict(tmp_path):
    _fake_dist(tmp_path, "broken_strict", "raise ImportError('needs xyz')\n")
    out = _plugins(tmp_path, EIMSDK_PLUGINS_STRICT="true")
    assert out.returncode == 2 and "needs xyz" in out.stderr and "Traceback" not in out.stderr


def test_blocked_backend_is_reported_as_blocked(tmp_path):
    image = photo(tmp_path / "in.png", 32, 32)
    out = subprocess.run([sys.executable, "-m", "eimsdk", "edit", "toy-pixart", "--image", str(image), "--prompt",
                          "a", "--target", "b", "--out", str(tmp_path / "o.png")], capture_output=True, text=True,
                         env={**os.environ, "EIMSDK_PLUGINS_ALLOW": "toy,core,metrics"}, timeout=120)
    assert out.returncode == 2 and "blocked" in out.stderr and "pixart" in out.stderr
    assert "pip install" not in out.stderr


# ------------------------------------------------------------------------------------------------ 3. validation edge
@pytest.mark.parametrize("setting, says", [
    ("lam=-1", "lam=-1 is invalid"), ("t_edit=2", "t_edit=2 is invalid"), ("nosuch=1", "'nosuch' is unknown"),
    ("lam", "--set expects key=value"),
])
def test_bad_settings_are_one_line_naming_key_and_range(tmp_path, capsys, no_model, setting, says):
    image = photo(tmp_path / "in.png", 16, 16)
    code, _, err = cli(capsys, "edit", "--image", str(image), "--prompt", "a", "--target", "b", "--set", setting,
                       "--out", str(tmp_path / "o.png"))
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1
    if "invalid" in says:
        assert "accepted:" in err


def test_router_sends_each_setting_by_field_name():
    from eimsdk.methods.baselines import SwapFinder
    from eimsdk.methods.hsds import HSDSFinder
    from eimsdk.methods.manipulate import LinearJointManipulator

    finder, manip = route_settings({"lam": 0.1, "t_edit": 0.5, "num_steps": 3}, HSDSFinder, LinearJointManipulator)
    assert finder == {"lam": 0.1} and manip == {"t_edit": 0.5, "num_steps": 3}
    finder, manip = route_settings({"t_edit": 0.5}, SwapFinder, LinearJointManipulator)
    assert finder == {"t_edit": 0.5} == manip


def test_api_settings_raise_input_error(toy_editor):
    with pytest.raises(InputError, match=r"lam=-1 is invalid .*accepted: a number >= 0"):
        toy_editor.find_direction(Image.new("RGB", (32, 32)), "a red circle", "a blue circle", lam=-1)
    with pytest.raises(InputError, match="t_edit=2 is invalid"):
        toy_editor.edit(Image.new("RGB", (32, 32)), "a red circle", "a blue circle", t_edit=2)


@pytest.mark.parametrize("target", ["A Red Circle", "a red circle ", "  a red  circle"])
def test_target_equal_after_normalisation_is_refused(toy_editor, target):
    with pytest.raises(InputError, match="nothing to edit"):
        toy_editor.find_direction(Image.new("RGB", (32, 32)), "a red circle", target, method="text")


def test_unknown_tokens_warn(toy_editor):
    with pytest.warns(UserWarning, match="not in this model's vocabulary.*'\U0001F600'"):
        check_prompts("a red circle \U0001F600", 1, toy_editor.encoder)


def test_strengths_accept_numpy_and_torch_scalars_and_warn_when_absurd():
    assert check_strength(np.float32(0.5)) == 0.5 and check_strength(torch.tensor(2.0)) == 2.0
    assert check_strength(np.int64(-1)) == -1.0
    with pytest.warns(UserWarning, match="far outside"):
        check_strength(100.0)
    with pytest.raises(InputError):
        check_strength(torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("argv, says", [
    (["--seed", "12345678901234567890123"], "--seed"),
    (["--device", "cuda"], "--device"),
    (["--device", "potato"], "--device"),
])
def test_scalar_arguments_are_one_line_exit_2(tmp_path, capsys, no_model, argv, says):
    if argv[-1] == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    image = photo(tmp_path / "in.png", 16, 16)
    code, _, err = cli(capsys, "edit", "--image", str(image), "--prompt", "a", "--target", "b", *argv,
                       "--out", str(tmp_path / "o.png"))
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1


def test_sweep_strengths_that_are_not_numbers(tmp_path, capsys, no_model):
    image = photo(tmp_path / "in.png", 16, 16)
    code, _, err = cli(capsys, "direction", "sweep", "--image", str(image), "--prompt", "a", "--direction",
                       str(tmp_path / "d.safetensors"), "--strengths", "a,b", "--out", str(tmp_path / "g.png"))
    assert code == 2 and "--strengths" in err and "'a'" in err


def test_direction_without_action_exits_2(capsys):
    code, _, err = cli(capsys, "direction")
    assert code == 2 and "find, apply or sweep" in err


def test_manifest_with_unknown_class_or_missing_image_is_refused_at_load(tmp_path):
    from eimsdk.bench.manifest import parse_items
    from eimsdk.bench.runner import Runner

    image = photo(tmp_path / "src.png", 32, 32)
    row = {"id": "x", "image": str(image), "source_prompt": "a red circle", "attribute": "shape",
           "target_prompts": ["a red hexagon"], "expected": {"shape": "hexagon"}}
    with pytest.raises(InputError, match="expected shape='hexagon'"):
        Runner(parse_items([row]), {"models": ["toy-pixart"], "methods": ["text"]}, tmp_path / "out", progress=False)
    row = {**row, "image": str(tmp_path / "gone.png"), "expected": {"shape": "square"}}
    with pytest.raises(InputError, match="gone.png"):
        Runner(parse_items([row]), {"models": ["toy-pixart"], "methods": ["text"]}, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ 4. outputs
@pytest.mark.parametrize("case", ["folder", "file-parent", "same-as-input", "hardlink-to-input", "unwritable"])
def test_bad_outputs_are_refused_before_the_model(tmp_path, capsys, no_model, case):
    image = photo(tmp_path / "in.png", 16, 16)
    before = image.read_bytes()
    (tmp_path / "a_file").write_text("x")
    os.link(image, tmp_path / "link.png")
    out = {"folder": tmp_path, "file-parent": tmp_path / "a_file" / "o.png", "same-as-input": image,
           "hardlink-to-input": tmp_path / "link.png", "unwritable": Path("/proc/eimsdk-test/o.png")}[case]
    code, _, err = cli(capsys, "edit", "--image", str(image), "--prompt", "a", "--target", "b", "--out", str(out))
    assert code == 2 and "--out" in err and len(err.strip().splitlines()) == 1
    assert image.read_bytes() == before


def test_outputs_keep_the_umask_mode(tmp_path):
    from eimsdk.records import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "x.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_direction_sidecar_is_checked_against_the_signed_header(tmp_path):
    from eimsdk.records import Conditioning, Direction

    d = Direction(torch.ones(1, 2, 2, 2), Conditioning({"e": torch.ones(1, 3, 4)}), {"model_id": "m", "lam": 0.01})
    path = d.save(tmp_path / "d.safetensors")
    assert Direction.load(path).meta["lam"] == 0.01
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "lam": 5.0}))
    with pytest.raises(DirectionMismatchError, match=r"differs from the signed header .*'lam'"):
        Direction.load(path)
    sidecar.unlink()  # the header alone is authoritative
    assert Direction.load(path).meta["lam"] == 0.01


# ------------------------------------------------------------------------------------------------ 5. bench
def _hold_lock(out: Path) -> subprocess.Popen:
    code = ("import sys, time; from eimsdk.bench.runner import OutputLock; OutputLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_bench_on_one_folder_is_refused_and_a_dead_holder_is_taken_over(tmp_path):
    from eimsdk.bench.runner import OutputLock

    out = tmp_path / "out"
    proc = _hold_lock(out)
    try:
        with pytest.raises(InputError, match=f"pid {proc.pid}"):
            OutputLock(out).acquire()
    finally:
        proc.kill()  # kill -9: the OS releases the lock; the file still names the dead pid
        proc.wait()
    assert (out / ".lock").read_text().strip() == str(proc.pid)
    with OutputLock(out):
        assert (out / ".lock").read_text().strip() == str(os.getpid())


def test_unit_key_follows_the_image_content(tmp_path):
    from eimsdk.bench.manifest import parse_items
    from eimsdk.bench.runner import BenchConfig, parse_method, unit_key

    image = photo(tmp_path / "src.png", 16, 16)
    item = parse_items([{"id": "a", "image": str(image), "source_prompt": "a", "attribute": "c",
                         "target_prompts": ["b"]}])[0]
    cfg = BenchConfig(models=["m"], methods=["text"])
    key = unit_key(item, "m", parse_method("text"), cfg)
    assert unit_key(item, "m", parse_method("text"), cfg) == key
    photo(image, 16, 17)  # the same path, other content
    assert unit_key(item, "m", parse_method("text"), cfg) != key
    # the same bytes in another folder (another run's OUT/manifest): the same unit, so units can be merged
    moved = tmp_path / "other" / "src.png"
    moved.parent.mkdir()
    moved.write_bytes(image.read_bytes())
    assert unit_key(item.model_copy(update={"image": str(moved)}), "m", parse_method("text"), cfg) == \
        unit_key(item, "m", parse_method("text"), cfg)


def test_stale_temp_files_are_removed(tmp_path):
    from eimsdk.records import atomic_write_text, remove_stale_temps

    (tmp_path / "items").mkdir()
    stale = tmp_path / "items" / ".a.json.k3j_x9q2.tmp.json"
    stale.write_text("half")
    plot = tmp_path / ".plot.png.abcdefgh.tmp.png"
    plot.write_bytes(b"\x89PNG")
    keep = atomic_write_text(tmp_path / "items" / "a.json", "{}")
    assert sorted(remove_stale_temps(tmp_path)) == sorted([stale, plot])
    assert keep.read_text() == "{}" and not stale.exists() and not plot.exists()


# ------------------------------------------------------------------------------------------------ 6. threads
def test_thread_policy():
    assert choose_num_threads({"EIMSDK_NUM_THREADS": "3"}, cores=2, load=5.0) == 3
    assert choose_num_threads({"OMP_NUM_THREADS": "2"}, cores=8, load=0.0) == 2
    assert choose_num_threads({}, cores=2, load=1.0) == 1  # one core busy elsewhere
    assert choose_num_threads({}, cores=8, load=0.0) == 8
    assert choose_num_threads({"LOCAL_WORLD_SIZE": "4"}, cores=8, load=0.0) == 2
    assert choose_num_threads({}, cores=2, load=7.0) == 1
    with pytest.raises(InputError, match="EIMSDK_NUM_THREADS"):
        choose_num_threads({"EIMSDK_NUM_THREADS": "many"})


def test_suite_runs_with_one_thread():
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("argv", [["demo", "--out", "{file}"], ["bench", "toy", "--out", "{file}"],
                                  ["bench", "--report-only", "--out", "{run}"]])
def test_bench_and_demo_folders_are_checked(tmp_path, capsys, argv):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"models": []}')  # a config that no longer validates
    argv = [a.format(file=tmp_path / "a_file", run=tmp_path / "run") for a in argv]
    code, _, err = cli(capsys, *argv)
    assert code == 2 and "--out" in err and len(err.strip().splitlines()) == 1
