"""Robustness: generated plugin metadata (entry-point names, component names, targets, hooks that raise).

Whatever a third-party plugin declares, it fails alone: the built-ins load and keep their names."""

from __future__ import annotations

import importlib
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eimsdk.errors import PluginError
from eimsdk.plugins import NAME_RE, PluginManager

SUITE = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])
BUILTIN_FINDERS = {"hsds", "text", "dds", "sds", "swap"}

names = st.one_of(st.from_regex(r"[a-z][a-z0-9_.\-]{0,10}", fullmatch=True),
                  st.sampled_from(["hsds", "pixart", "linear", "ok-name", "Bad", "", "x" * 70, "a b", "é"]),
                  st.text(max_size=12))
rarely = st.sampled_from([False, False, False, True])
targets = st.sampled_from(["eimsdk.methods.baselines:TextOnlyFinder", "json:loads", "no.such.module:X", "notarget",
                           "eimsdk.methods.hsds:HSDSFinder"])


@SUITE
@example(entry="0\x1e0", component="hsds", target="json:loads", hook_raises=False, import_raises=False)
@given(entry=names, component=names, target=targets, hook_raises=rarely, import_raises=rarely)
def test_a_third_party_plugin_fails_alone(entry, component, target, hook_raises, import_raises):
    module = f"fuzz_plugin_{uuid.uuid4().hex}"
    body = "raise ImportError('import failed on purpose')\n" if import_raises else textwrap.dedent(f"""
        import eimsdk

        @eimsdk.hookimpl
        def register_direction_finders(register):
            {"raise ValueError('hook failed on purpose')" if hook_raises else f"register({component!r}, {target!r})"}
    """)
    entry_name = entry.replace("=", "").replace("\n", "").replace("[", "").strip() or "empty"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / f"{module}.py").write_text(body)
        info = root / f"{module}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[eimsdk]\n{entry_name} = {module}\n", encoding="utf-8")
        sys.path.insert(0, tmp)
        importlib.invalidate_caches()
        try:
            pm = PluginManager()
        finally:
            sys.path.remove(tmp)
            sys.modules.pop(module, None)
    report = {r["name"]: r for r in pm.report()}
    assert report["core"]["status"] == "ok" and BUILTIN_FINDERS <= set(pm.names("finder"))
    for name in BUILTIN_FINDERS:
        assert pm.get("finder", name).plugin == "core"
    mine = report.get(entry_name)
    if mine is None or mine["module"] != module:  # the entry point shadows (or is shadowed by) a built-in name
        return
    valid = (not import_raises and not hook_raises and NAME_RE.match(entry_name) and NAME_RE.match(component)
             and component not in BUILTIN_FINDERS and ":" in target)
    assert mine["status"] == ("ok" if valid else "failed"), mine
    if mine["status"] == "failed":
        assert mine["error"]
    else:
        try:
            pm.load("finder", component)
        except PluginError as exc:  # a bad target fails when loaded, naming the plugin
            assert entry_name in str(exc)
