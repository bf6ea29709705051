"""Reader-based DCI-style disentanglement: known answers, weighting, degenerate rows, the matrix builder."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eimsdk.errors import InputError
from eimsdk.metrics.disentanglement import (
    ResponseMatrix,
    dci_disentanglement,
    matrix_from_changes,
    reader_changes,
)


def test_diagonal_scores_one_and_targets_itself():
    res = dci_disentanglement(np.diag([0.9, 0.5, 0.2]), rows=["shape", "colour", "size"])
    assert res.overall == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in res.per_attribute.values())
    assert all(v == pytest.approx(1.0) for v in res.targeted.values())
    assert res.weights == pytest.approx({"shape": 0.9 / 1.6, "colour": 0.5 / 1.6, "size": 0.2 / 1.6})


def test_uniform_scores_zero():
    res = dci_disentanglement(np.full((4, 4), 0.3))
    assert res.overall == pytest.approx(0.0, abs=1e-12)
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in res.per_attribute.values())
    assert all(v == pytest.approx(0.25) for v in res.targeted.values())


def test_permutation_is_concentrated_but_not_targeted():
    m = np.eye(3)[[1, 2, 0]]
    res = dci_disentanglement(m, rows=["a", "b", "c"], cols=["a", "b", "c"])
    assert res.overall == pytest.approx(1.0)
    assert all(v == pytest.approx(0.0) for v in res.targeted.values())


def test_half_spread_row_and_row_weighting():
    # Row 0 splits evenly over 2 of 4 readers: H = log 2, D = 1 - log 2 / log 4 = 1/2.
    res = dci_disentanglement(np.array([[1.0, 1.0, 0.0, 0.0]]), rows=["x"], cols=list("abcd"))
    assert res.per_attribute["x"] == pytest.approx(0.5)
    # Rows [1, 0] (D = 1, mass 1) and [1, 1] (D = 0, mass 2): overall = 1/3.
    res = dci_disentanglement(np.array([[1.0, 0.0], [1.0, 1.0]]))
    assert res.overall == pytest.approx(1.0 / 3.0)


def test_sign_is_ignored():
    assert dci_disentanglement(-np.eye(3)).overall == pytest.approx(1.0)


def test_zero_rows_have_no_score_and_no_weight():
    res = dci_disentanglement(np.array([[1.0, 0.0], [0.0, 0.0]]), rows=["a", "b"])
    assert res.per_attribute == {"a": pytest.approx(1.0), "b": None}
    assert res.weights["b"] == 0.0 and res.overall == pytest.approx(1.0)
    nothing = dci_disentanglement(np.zeros((2, 2)))
    assert math.isnan(nothing.overall) and nothing.as_dict()["overall"] is None


@pytest.mark.parametrize("bad, match", [
    (np.array([1.0, 0.0]), "2-D"),
    (np.array([[np.nan, 0.0]]), "NaN"),
])
def test_bad_matrices_are_refused(bad, match):
    with pytest.raises(InputError, match=match):
        dci_disentanglement(bad)


def test_names_must_match_shape():
    with pytest.raises(InputError, match="rows"):
        dci_disentanglement(np.eye(2), rows=["a", "b", "c"])


def test_reader_changes_categorical_and_numeric():
    before = {"colour": "red", "shape": "circle", "brightness": 0.25}
    after = {"colour": "blue", "shape": "circle", "brightness": 0.75}
    assert reader_changes(before, after) == {"colour": 1.0, "shape": 0.0, "brightness": 0.5}


def test_matrix_from_changes_averages_per_row():
    records = [("colour", {"colour": 1.0, "shape": 0.0}), ("colour", {"colour": 1.0, "shape": 1.0}),
               ("shape", {"colour": 0.0, "shape": 1.0})]
    m = matrix_from_changes(records, rows=["colour", "shape"])
    assert m.cols == ["colour", "shape"] and m.counts == [2, 1]
    np.testing.assert_allclose(m.matrix, [[1.0, 0.5], [0.0, 1.0]])
    res = dci_disentanglement(m)
    assert res.targeted["shape"] == pytest.approx(1.0) and res.per_attribute["colour"] < 1.0
    again = ResponseMatrix.from_dict(m.as_dict())
    np.testing.assert_allclose(again.matrix, m.matrix)
    with pytest.raises(InputError, match="'size'"):
        matrix_from_changes(records, cols=["colour", "size"])


def test_metrics_plugin_registers_like_any_plugin(fresh_plugin_manager):
    from eimsdk.interfaces import AttributeReader, EditMetric
    from eimsdk.metrics import plugin

    pm = fresh_plugin_manager
    if "psnr" not in pm.names("metric"):
        info = pm.register(plugin, "metrics-under-test")
        assert info.status == "ok", info.error
    for name in ("psnr", "ssim", "clip-score", "dino-similarity", "lpips"):
        assert issubclass(pm.load("metric", name), EditMetric)
    assert issubclass(pm.load("reader", "clip-probe"), AttributeReader)


def test_build_response_matrix_on_the_fake_pixel_world():
    from eimsdk.metrics.disentanglement import EditTask, build_response_matrix
    from eimsdk_toy.readers import ToyReader
    from eimsdk.editor import Editor
    from test_bench_world import FakePixelEncoder, clean_items, plugin_manager

    tasks = [EditTask(i.load_source(), i.source_prompt, i.attribute, i.target_prompts) for i in clean_items(2)]
    editor = Editor(FakePixelEncoder(), plugin_manager=plugin_manager(), manipulator="fake-add")
    reader = ToyReader()
    m = build_response_matrix(editor, reader, tasks, method="fake-oracle")
    assert m.rows == [t.attribute for t in tasks[:5]] and m.cols == list(reader.attributes) and m.counts == [2] * 5
    np.testing.assert_allclose(m.matrix, [[float(r == c) for c in m.cols] for r in m.rows])
    assert dci_disentanglement(m).overall == pytest.approx(1.0)
    assert not build_response_matrix(editor, reader, tasks, method="fake-null").matrix.any()
    with pytest.raises(InputError, match="tasks is empty"):
        build_response_matrix(editor, reader, [], method="fake-oracle")
