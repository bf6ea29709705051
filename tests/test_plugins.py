"""Plugin discovery, isolation of broken plugins, validation, and the cheap listing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import eimsdk
from eimsdk.errors import PluginError
from eimsdk.plugins import PluginManager


def _fake_dist(root: Path, name: str, module_source: str, entry: str | None = None) -> None:
    """A minimal installed distribution on ``root``: one module and its ``eimsdk`` entry point."""
    (root / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}-0.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3.1\n")
    (info / "entry_points.txt").write_text(f"[eimsdk]\n{entry or name} = {name}\n")


def _plugins_json(extra_path: Path | None = None, **env: str) -> list[dict]:
    full_env = {**os.environ, **env}
    if extra_path is not None:
        full_env["PYTHONPATH"] = str(extra_path) + os.pathsep + full_env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-m", "eimsdk", "plugins", "--json"], capture_output=True, text=True,
                         env=full_env, check=True)
    return json.loads(out.stdout)


def test_builtin_plugins_are_listed_through_entry_points(fresh_plugin_manager):
    report = {r["name"]: r for r in fresh_plugin_manager.report()}
    for name in ("pixart", "sd3", "flux", "core"):
        assert report[name]["status"] == "ok", report[name]
        assert report[name]["distribution"] == "eimsdk"
    assert set(fresh_plugin_manager.names("backend")) >= {"pixart", "sd3", "flux"}
    assert "hsds" in fresh_plugin_manager.names("finder")
    pixart = fresh_plugin_manager.get("backend", "pixart")
    assert "PixArtSigmaPipeline" in pixart.extra["pipeline_classes"]


def test_listing_and_import_do_not_import_torch():
    code = ("import sys, eimsdk; from eimsdk.plugins import get_plugin_manager; get_plugin_manager(); "
            "from eimsdk.cli import main; main(['plugins']); "
            "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_broken_plugin_is_reported_and_others_work(tmp_path):
    _fake_dist(tmp_path, "broken_plugin", "raise RuntimeError('boom at import')\n")
    report = {r["name"]: r for r in _plugins_json(tmp_path)}
    assert report["broken_plugin"]["status"] == "failed"
    assert "boom at import" in report["broken_plugin"]["error"]
    assert report["broken_plugin"]["version"] == "0.3.1"
    assert report["pixart"]["status"] == "ok" and report["core"]["status"] == "ok"


def test_plugin_whose_hook_raises_is_isolated(tmp_path):
    _fake_dist(tmp_path, "hook_raises", """
        import eimsdk

        @eimsdk.hookimpl
        def register_direction_finders(register):
            raise ValueError("bad registration")
    """)
    report = {r["name"]: r for r in _plugins_json(tmp_path)}
    assert report["hook_raises"]["status"] == "failed"
    assert "bad registration" in report["hook_raises"]["error"]
    assert "hsds" in report["core"]["provides"]["finder"]


def test_duplicate_name_names_both_providers(tmp_path):
    _fake_dist(tmp_path, "zz_duplicate", """
        import eimsdk

        @eimsdk.hookimpl
        def register_backends(register):
            register("pixart", "zz_duplicate:Nope", pipeline_classes=("PixArtAlphaPipeline",))
    """)
    report = {r["name"]: r for r in _plugins_json(tmp_path)}
    err = report["zz_duplicate"]["error"]
    assert report["zz_duplicate"]["status"] == "failed"
    assert "'pixart'" in err and "zz_duplicate" in err and "plugin 'pixart'" in err
    assert report["pixart"]["status"] == "ok"


def test_allow_and_block_environment_variables(tmp_path):
    blocked = {r["name"]: r["status"] for r in _plugins_json(EIMSDK_PLUGINS_BLOCK="flux,sd3")}
    assert blocked["flux"] == "blocked" and blocked["sd3"] == "blocked" and blocked["pixart"] == "ok"
    allowed = {r["name"]: r["status"] for r in _plugins_json(EIMSDK_PLUGINS_ALLOW="pixart")}
    assert allowed["pixart"] == "ok" and allowed["core"] == "blocked"


def test_strict_mode_raises(tmp_path, monkeypatch):
    _fake_dist(tmp_path, "strict_broken", "raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="missing dependency xyz"):
        PluginManager(strict=True)


class _GoodPlugin:
    @eimsdk.hookimpl
    def register_direction_finders(self, register):
        register("my-finder", "eimsdk.methods.hsds:HSDSFinder", description="alias for tests")


def test_programmatic_registration_and_validation(fresh_plugin_manager):
    pm = fresh_plugin_manager
    info = pm.register(_GoodPlugin(), "good")
    assert info.status == "ok" and pm.get("finder", "my-finder").plugin == "good"
    assert pm.list("finder", "my-")[0].name == "my-finder"

    class BadName:
        @eimsdk.hookimpl
        def register_metrics(self, register):
            register("Bad Name!", "x:y")

    assert pm.register(BadName(), "badname").status == "failed"
    assert "invalid" in pm.plugins["badname"].error
    with pytest.raises(PluginError, match="invalid"):
        pm.register(_GoodPlugin(), "Not Valid")


def test_component_type_is_checked_on_load(fresh_plugin_manager):
    class WrongType:
        @eimsdk.hookimpl
        def register_backends(self, register):
            register("not-an-encoder", "eimsdk.cost:Cost")

    fresh_plugin_manager.register(WrongType(), "wrongtype")
    with pytest.raises(PluginError, match="not a subclass of eimsdk.interfaces:Encoder"):
        fresh_plugin_manager.load("backend", "not-an-encoder")


def test_missing_component_lists_installed(fresh_plugin_manager):
    with pytest.raises(PluginError, match="installed: .*hsds"):
        fresh_plugin_manager.get("finder", "does-not-exist")
