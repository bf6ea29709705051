"""The benchmark runner and report on the fake pixel world: known answers, resume after a kill, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from eimsdk.bench import runner as runner_mod
from eimsdk.bench.runner import BenchConfig, Runner, parse_method, read_result
from eimsdk.errors import InputError, PluginError
from eimsdk.metrics.pixels import PSNR_CAP
from test_bench_world import clean_items, fake_model, plugin_manager, strip_timing


@pytest.fixture(scope="module")
def pm():
    return plugin_manager()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return fake_model(tmp_path_factory.mktemp("fake-model"))


def _config(model, **kw):
    base = dict(models=[model], methods=["fake-oracle", "fake-null"], strengths=[0.5, 1.0], manipulator="fake-add")
    return BenchConfig(**{**base, **kw})


def _results(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_known_answers_and_report(tmp_path, pm, model):
    items = clean_items(2)
    summary = Runner(items, _config(model), tmp_path, plugin_manager=pm, progress=False).run()
    table = summary["table"]["fake-model0"]
    oracle, null = table["fake-oracle"]["by_strength"]["1"], table["fake-null"]["by_strength"]["1"]
    # The oracle's dz is exactly target - source: every edit lands, nothing else moves, nothing outside the region.
    assert oracle["success"] == 1.0 and oracle["preserved"] == 1.0 and oracle["precise"] == 1.0
    assert oracle["metrics"]["psnr_outside"] == PSNR_CAP and oracle["metrics"]["ssim_outside"] == pytest.approx(1.0)
    assert oracle["metrics"]["psnr"] < 40  # the edited region did change
    # A zero direction changes nothing: no success, everything preserved.
    assert null["success"] == 0.0 and null["preserved"] == 1.0 and null["metrics"]["psnr"] == PSNR_CAP
    d = table["fake-oracle"]["disentanglement"]
    assert d["overall"] == pytest.approx(1.0) and all(v == pytest.approx(1.0) for v in d["targeted"].values())
    assert np.allclose(d["matrix"]["matrix"], np.eye(5))
    assert table["fake-null"]["disentanglement"]["overall"] is None
    assert table["fake-oracle"]["find_model_evals"] == 1.0
    assert table["fake-oracle"]["by_attribute"]["colour"] == {"n": 2, "success": 1.0, "preserved": 1.0,
                                                              "success_ci": [0.3424, 1.0], "preserved_ci": [0.3424, 1.0]}
    n = len(items)  # Wilson intervals: n of n gives [n / (n + z^2), 1]; 0 of n gives [0, z^2 / (n + z^2)]
    z2 = 1.959963984540054**2
    assert oracle["precise_ci"] == [pytest.approx(n / (n + z2), abs=1e-4), 1.0]
    assert null["success_ci"] == [0.0, pytest.approx(z2 / (n + z2), abs=1e-4)]
    (test,) = summary["paired"]["fake-model0"]["1"]  # the oracle edits all n precisely, the null none
    assert (test["a"], test["b"], test["n"], test["only_a"], test["only_b"]) == ("fake-oracle", "fake-null", n, n, 0)
    assert test["p_value"] == pytest.approx(2 / 2**n, rel=1e-3)

    results = _results(tmp_path)
    assert len(results) == 2 * len(items)
    rec = results[0]
    assert rec["source_read"] == items[0].source_values
    assert [e["strength"] for e in rec["edits"]] == [0.5, 1.0]
    with Image.open(tmp_path / rec["edits"][1]["image"]) as im:
        assert im.size == (32, 32)
    report = (tmp_path / "report.md").read_text()
    assert "| fake-model0 | fake-oracle | 1.00 [0.72, 1.00] | 1.00 [0.72, 1.00] | 1.00 [0.72, 1.00] |" in report
    # the method x model table of precise edits, and the paired test between the two
    assert "| fake-oracle | 1.00 [0.72, 1.00] |\n| fake-null | 0.00 [0.00, 0.28] |" in report
    assert "| fake-model0 | fake-oracle | fake-null | 10 | 1.00 | 0.00 | 1.00 | 10 | 0 | 0.00195 |" in report
    for plot in summary["plots"]:
        with Image.open(tmp_path / plot) as im:
            assert im.format == "PNG" and im.width > 100
    assert json.loads((tmp_path / "summary.json").read_text())["items"] == len(items)


def test_items_are_seeded_by_id_not_by_order(tmp_path, pm, model):
    items = clean_items(1)
    cfg = _config(model, methods=["fake-noisy"], strengths=[1.0])
    Runner(items, cfg, tmp_path / "a", plugin_manager=pm, progress=False).run()
    Runner(items[::-1], cfg, tmp_path / "b", plugin_manager=pm, progress=False).run()
    a = {r["id"]: strip_timing(r) for r in _results(tmp_path / "a")}
    b = {r["id"]: strip_timing(r) for r in _results(tmp_path / "b")}
    assert a == b
    assert len({json.dumps(r["edits"][0]["read"], sort_keys=True) for r in a.values()}) > 1  # the noise matters


def test_killed_run_resumes_without_redoing_or_corrupting(tmp_path, pm, model, monkeypatch):
    items = clean_items(2)
    cfg = _config(model, methods=["fake-noisy"], strengths=[1.0])
    Runner(items, cfg, tmp_path / "reference", plugin_manager=pm, progress=False).run()

    real = runner_mod.Runner._run_unit
    calls = []

    def dies_on_the_fourth(self, *args, **kw):
        calls.append(args[1].item.id)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the process is killed mid-run
        return real(self, *args, **kw)

    out = tmp_path / "run"
    monkeypatch.setattr(runner_mod.Runner, "_run_unit", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        Runner(items, cfg, out, plugin_manager=pm, progress=False).run()
    finished = sorted(p.stem for p in (out / "items").rglob("*.json"))
    assert len(finished) == 3 and not (out / "results.jsonl").exists()
    # A torn file left by a crash elsewhere (not by us: our writes are atomic) and a stray temp file.
    (out / "items" / "fake-model0" / "fake-noisy" / f"{items[5].id}.json").write_text('{"id": "tru')
    (out / "items" / "fake-model0" / "fake-noisy" / ".x.json.123.tmp.json").write_text("garbage")

    calls.clear()
    monkeypatch.setattr(runner_mod.Runner, "_run_unit", lambda self, *a, **k: (calls.append(a[1].item.id),
                                                                                 real(self, *a, **k))[1])
    runner = Runner(items, cfg, out, plugin_manager=pm, progress=False)
    assert runner.pending()[1] == 3
    runner.run()
    assert len(calls) == len(items) - 3 and set(calls).isdisjoint(finished)
    assert [strip_timing(r) for r in _results(out)] == [strip_timing(r) for r in _results(tmp_path / "reference")]

    # Changing what determines a result (here the strengths) on the same folder is refused; nothing is redone.
    calls.clear()
    before = {p: p.read_bytes() for p in (out / "items").rglob("*.json")}
    with pytest.raises(InputError, match="strengths"):
        Runner(items, cfg.model_copy(update={"strengths": [2.0]}), out, plugin_manager=pm, progress=False).run()
    assert calls == [] and {p: p.read_bytes() for p in (out / "items").rglob("*.json")} == before


def test_method_overrides_route_to_finder_or_manipulator(tmp_path, pm, model):
    spec = parse_method("fake-oracle:gain=2,scale=0.5", ["scale"])
    assert spec.finder_config == {"gain": 2} and spec.manipulator_config == {"scale": 0.5}
    assert spec.slug == "fake-oracle_gain-2_scale-0.5"
    items = clean_items(1)[:1]
    cfg = _config(model, methods=["fake-oracle:gain=2,scale=0.5"], strengths=[1.0])
    Runner(items, cfg, tmp_path, plugin_manager=pm, progress=False).run()
    rec = _results(tmp_path)[0]
    assert rec["edits"][0]["read"] == {**items[0].source_values, **items[0].expected}  # 2 x 0.5 = the exact edit


def test_internal_score_from_saved_directions(tmp_path, pm, model):
    items = clean_items(2)
    cfg = _config(model, methods=["fake-oracle"], strengths=[1.0], internal=2)
    summary = Runner(items, cfg, tmp_path, plugin_manager=pm, progress=False).run()
    internal = summary["table"]["fake-model0"]["fake-oracle"]["internal"]
    assert internal["sources"] == 2 and sorted(internal["attributes"]) == sorted(items[0].expected | {
        i.attribute: 0 for i in items})
    assert 0.0 <= internal["score"] <= 1.0
    assert internal["source_ids"] == list(dict.fromkeys(i.group_key for i in items))[:2]  # pairs sources across runs
    assert len(internal["per_source"]) == 2
    assert (tmp_path / "internal.json").is_file()


def test_internal_score_names_units_finished_without_directions(tmp_path, pm, model):
    items = clean_items(2)
    Runner(items, _config(model, methods=["fake-oracle"], strengths=[1.0]), tmp_path, plugin_manager=pm,
           progress=False).run()
    # Resumed with --internal: the finished units are kept, but they saved no direction.
    summary = Runner(items, _config(model, methods=["fake-oracle"], strengths=[1.0], internal=2), tmp_path,
                     plugin_manager=pm, progress=False).run()
    internal = summary["table"]["fake-model0"]["fake-oracle"]["internal"]
    assert "direction.safetensors" in internal["error"] and "does not exist" in internal["error"]


@pytest.mark.parametrize("kw, error, match", [
    (dict(methods=["no-such-finder"]), PluginError, "no finder named 'no-such-finder'"),
    (dict(methods=["fake-oracle:gain=-1"]), InputError, "fake-oracle:gain=-1.*finder settings: gain=-1 .*accepted: a number > 0"),
    (dict(methods=["fake-oracle:gain"]), InputError, "must be key=value"),
    (dict(methods=["fake-oracle:gain=2", "fake-oracle:gain=2"]), InputError, "duplicate"),
    (dict(reader="toy", strengths=[float("nan")]), InputError, "finite"),
])
def test_bad_configuration_fails_before_any_work(tmp_path, pm, model, kw, error, match):
    with pytest.raises(error, match=match):
        Runner(clean_items(1), {**_config(model).model_dump(), **kw}, tmp_path, plugin_manager=pm, progress=False)
    assert not (tmp_path / "items").exists()


def test_expected_attribute_must_be_readable(tmp_path, pm, model):
    bad = clean_items(1)[0].model_copy(update={"expected": {"mood": "happy"}})
    with pytest.raises(InputError, match="'mood' is not read by reader 'toy'"):
        Runner([bad], _config(model), tmp_path, plugin_manager=pm, progress=False)


def test_unit_errors_are_recorded_and_counted(tmp_path, pm, model, monkeypatch):
    from eimsdk.errors import NumericalError

    from test_bench_world import OracleFinder

    def explode(self, *a, **k):
        raise NumericalError("sampling produced NaN")

    monkeypatch.setattr(OracleFinder, "find", explode)
    summary = Runner(clean_items(1)[:2], _config(model, methods=["fake-oracle"]), tmp_path, plugin_manager=pm,
                     progress=False).run()
    entry = summary["table"]["fake-model0"]["fake-oracle"]
    assert entry["errors"] == 2 and entry["by_strength"]["1"]["success"] == 0.0
    assert "NaN" in read_result(next((tmp_path / "items").rglob("*.json")))["error"]


def test_real_backend_and_methods(tmp_path, pm, tiny_pipeline_path):
    """The runner drives a real diffusers backend, HSDS and a baseline through the Encoder interface only."""
    items = clean_items(1)[:2]
    cfg = BenchConfig(models=[str(tiny_pipeline_path("pixart"))], methods=["text", "hsds:num_timesteps=2,cg_iters=2"],
                      strengths=[0.0, 1.0], manipulator_config={"num_steps": 2})
    summary = Runner(items, cfg, tmp_path, plugin_manager=pm, progress=False).run()
    results = _results(tmp_path)
    assert len(results) == 4 and not any("error" in r for r in results)
    by = {(r["method"], r["id"]): r for r in results}
    for item in items:
        text, hsds = by[("text", item.id)], by[("hsds:num_timesteps=2,cg_iters=2", item.id)]
        assert hsds["find_cost"]["model_evals"] > text["find_cost"]["model_evals"]
        # An edit is one inversion plus one sampling pass of num_steps each.
        assert all(e["cost"]["model_evals"] == 4 for e in text["edits"] + hsds["edits"])
        # Strength 0 is the inversion round trip, whatever the direction.
        assert strip_timing(text)["edits"][0]["read"] == strip_timing(hsds)["edits"][0]["read"]
        assert text["edits"][0]["metrics"]["psnr"] == hsds["edits"][0]["metrics"]["psnr"]
    assert set(summary["table"]["tiny-pixart0"]) == {"text", "hsds:num_timesteps=2,cg_iters=2"}


def test_a_method_with_its_own_manipulator(tmp_path, pm, tiny_pipeline_path):
    """flowedit:manipulator=flowedit runs next to methods of the run's manipulator, whose settings it does not get."""
    items = clean_items(1)[:1]
    flow = "flowedit:manipulator=flowedit,num_steps=4,n_max=3,target_guidance=1"
    cfg = BenchConfig(models=[str(tiny_pipeline_path("pixart"))], methods=["text", flow], strengths=[0.0, 1.0],
                      manipulator_config={"num_steps": 2})
    Runner(items, cfg, tmp_path, plugin_manager=pm, progress=False).run()
    by = {r["method"]: r for r in _results(tmp_path)}
    assert not any("error" in r for r in by.values())
    assert [e["cost"]["model_evals"] for e in by["text"]["edits"]] == [4, 4]  # linear: 2 + 2 steps
    assert [e["cost"]["model_evals"] for e in by[flow]["edits"]] == [0, 6]  # FlowEdit: 2 per step, none at 0
    assert by[flow]["edits"][0]["metrics"]["psnr"] > by["text"]["edits"][0]["metrics"]["psnr"]  # 0 is the source
