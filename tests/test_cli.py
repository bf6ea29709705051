"""The CLI answers without importing torch for help and listing, and reports errors cleanly."""

from __future__ import annotations

import json
import subprocess
import sys

from eimsdk.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eimsdk", *args], capture_output=True, text=True)


def test_help_lists_commands():
    out = _run("--help")
    assert out.returncode == 0
    for cmd in ("plugins", "generate", "edit", "direction", "demo"):
        assert cmd in out.stdout


def test_plugins_table_and_json(capsys):
    assert main(["plugins"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["PLUGIN", "VERSION", "STATUS", "PROVIDES"]
    assert "pixart" in table and "sd3" in table and "flux" in table
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"pixart", "sd3", "flux"} <= {d["name"] for d in data}


def test_plugins_filter_by_kind(capsys):
    assert main(["plugins", "--kind", "backend", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["kind"] for r in rows} == {"backend"}
    assert any("FluxPipeline" in r.get("pipeline_classes", []) for r in rows)


def test_missing_image_is_a_clean_error(tmp_path, tiny_pipeline_path):
    out = _run("edit", str(tiny_pipeline_path("pixart")), "--image", str(tmp_path / "nope.png"), "--prompt", "a cat",
               "--target", "a dog", "--out", str(tmp_path / "o.png"))
    assert out.returncode == 2
    assert "image=" in out.stderr and "does not exist" in out.stderr
    assert "Traceback" not in out.stderr
