"""Robustness of ``eimsdk bench`` output folders: kill -9 mid-run, and two processes on one folder."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_bench_world import clean_items, fake_model, plugin_env, plugin_manager, strip_timing

from eimsdk.bench.manifest import write_manifest
from eimsdk.bench.runner import BenchConfig, Runner
from eimsdk.errors import InputError
from eimsdk.records import TEMP_FILE_PATTERN

SLOW_RUN = """
import sys, time
from eimsdk.bench import runner as runner_mod
from eimsdk.bench.manifest import load_manifest
from eimsdk.bench.runner import BenchConfig, Runner

real = runner_mod.Runner._run_unit

def slow(self, *args, **kwargs):
    time.sleep(0.3)
    return real(self, *args, **kwargs)

runner_mod.Runner._run_unit = slow
config = BenchConfig(models=[sys.argv[2]], methods=["fake-oracle"], strengths=[1.0], manipulator="fake-add")
items = load_manifest(sys.argv[3])  # the parent's items: the same source files, so the same unit keys
Runner(items, config, sys.argv[1], progress=False).run()  # plugins found through the entry point
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return fake_model(tmp_path_factory.mktemp("fake-model"))


def _config(model: str) -> BenchConfig:
    return BenchConfig(models=[model], methods=["fake-oracle"], strengths=[1.0], manipulator="fake-add")


def _start(tmp_path: Path, out: Path, model: str) -> subprocess.Popen:
    manifest = write_manifest(clean_items(2), tmp_path / "manifest.jsonl")
    return subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(out), model, str(manifest)],
                            env=plugin_env(tmp_path / "env"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def _units(out: Path) -> list[Path]:
    """Finished unit files; a temp file a kill left behind mid-write is not one."""
    if not (out / "items").exists():
        return []
    return sorted(p for p in (out / "items").rglob("*.json") if not re.match(TEMP_FILE_PATTERN, p.name))


def test_kill_9_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path, model):
    pm = plugin_manager()
    reference = tmp_path / "reference"
    Runner(clean_items(2), _config(model), reference, plugin_manager=pm, progress=False).run()
    out = tmp_path / "out"
    proc = _start(tmp_path, out, model)
    _wait_for(lambda: len(_units(out)) >= 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p: p.read_bytes() for p in _units(out)}
    assert 2 <= len(done) < len(clean_items(2))
    (out / "items" / ".unit.json.abcd1234.tmp.json").write_text("torn")  # what a kill during a write leaves

    Runner(clean_items(2), _config(model), out, plugin_manager=pm, progress=False).run()
    assert all(p.read_bytes() == b for p, b in done.items())  # finished units were kept, not redone
    results = [strip_timing(json.loads(line)) for line in (out / "results.jsonl").read_text().splitlines()]
    expected = [strip_timing(json.loads(line)) for line in (reference / "results.jsonl").read_text().splitlines()]
    assert results == expected
    assert not [p for p in out.rglob(".*") if re.match(TEMP_FILE_PATTERN, p.name)]


def test_second_process_on_one_folder_is_refused_naming_the_pid(tmp_path, model):
    out = tmp_path / "out"
    proc = _start(tmp_path, out, model)
    try:
        _wait_for(lambda: (out / ".lock").is_file() and (out / ".lock").read_text().strip() == str(proc.pid), proc)
        before = {p: p.read_bytes() for p in _units(out)}
        with pytest.raises(InputError, match=f"in use by another eimsdk bench run \\(pid {proc.pid}\\)"):
            Runner(clean_items(2), _config(model), out, plugin_manager=plugin_manager(), progress=False).run()
        assert all(p.read_bytes() == b for p, b in before.items())
    finally:
        proc.kill()
        proc.wait()
