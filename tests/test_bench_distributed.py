"""Scale-out: `accelerate launch -m eimsdk bench` with 2 CPU processes gives the single-process results."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from eimsdk.bench.manifest import write_manifest
from test_bench_world import clean_items, fake_model, plugin_env, strip_timing


def _bench(cmd: list[str], manifest, model, out, env) -> None:
    args = ["bench", str(manifest), "--models", model, "--methods", "fake-noisy", "fake-oracle",
            "--manipulator", "fake-add", "--strengths", "0.5", "1", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd + args, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _results(out) -> dict[tuple[str, str], dict]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {(r["method"], r["id"]): r for r in rows}


def test_two_processes_equal_one(tmp_path):
    assert shutil.which("accelerate"), "accelerate is part of eimsdk[all]"
    env = plugin_env(tmp_path / "plugin")
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(clean_items(1), manifest)  # 5 items: ranks get 3 and 2
    model = fake_model(tmp_path / "fake-model")

    _bench([sys.executable, "-m", "eimsdk"], manifest, model, tmp_path / "single", env)
    # accelerate's --cpu multi-process mode needs MPI; --multi_gpu starts torchrun workers, which run on CPUs too.
    _bench(["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
            "no", "--dynamo_backend", "no", "-m", "eimsdk"], manifest, model, tmp_path / "multi", env)

    single, multi = _results(tmp_path / "single"), _results(tmp_path / "multi")
    assert len(single) == 10 and single.keys() == multi.keys()
    assert {r["worker"]["world_size"] for r in multi.values()} == {2}
    ranks = {r["id"]: r["worker"]["rank"] for r in multi.values()}
    assert ranks == {item.id: i % 2 for i, item in enumerate(clean_items(1))}
    for key in single:
        assert strip_timing(single[key]) == strip_timing(multi[key]), key
    summary = json.loads((tmp_path / "multi" / "summary.json").read_text())
    assert summary["items"] == 5 and (tmp_path / "multi" / "report.md").is_file()
