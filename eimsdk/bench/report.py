"""Benchmark reports: ``summary.json`` and ``report.md`` (method x model tables) plus PNG plots.

Rates are over every unit at a strength (a unit that failed counts as a failed edit):

- success: the edited image shows every ``expected`` value;
- preserved: every other attribute reads as in the source;
- precise: both at once;
- the means of what the configured edit metrics return (one column per key, e.g. ``psnr_outside``); costs are
  means per unit.

Every rate carries a 95% Wilson interval (``*_ci``), and every pair of methods run on the same tasks with the same
model is compared at each strength by an exact McNemar test on precise edits (``paired``;
:mod:`eimsdk.bench.stats`). When the manifest gives attribute kinds (``meta["kinds"]``), each kind gets the
success of the edits along it and the share of edits that keep all of it (``by_kind``, with intervals), and each
kind that no task edits (content the captions never name) gets paired tests on keeping it (``paired_kept``).

The reader-based disentanglement uses the reference strength (the one closest to 1): ``M_ij`` is the fraction
of edits along attribute ``i`` that changed reader ``j`` (:mod:`eimsdk.metrics.disentanglement`); a reader the
item expects to change along with ``i`` counts as changed when it misses its expected value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from eimsdk.bench.stats import format_p, paired_tests, rate_interval
from eimsdk.records import atomic_write, atomic_write_text

def reference_strength(strengths: Sequence[float]) -> float:
    return min(strengths, key=lambda s: (abs(s - 1.0), -s))


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def _edit_at(rec: dict[str, Any], strength: float) -> dict[str, Any] | None:
    return next((e for e in rec.get("edits", []) if e["strength"] == strength), None)


def attribute_kinds(manifest: Path) -> dict[str, str]:
    """Attribute -> kind (e.g. coarse / fine / unnamed) from the items' ``meta["kinds"]``; empty when none say."""
    kinds: dict[str, str] = {}
    if manifest.is_file():
        for line in manifest.read_text().splitlines():
            kinds.update(json.loads(line).get("meta", {}).get("kinds", {}) if line.strip() else {})
    return kinds


def by_kind(recs: list[dict[str, Any]], strength: float, kinds: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per attribute kind: success of the edits along attributes of that kind, the share of all edits that keep
    every other attribute of that kind as the source reads it, and that share among the successful edits only
    (``kept_if_success``: an edit that misses its target keeps what it never touched, which is no credit). Kinds
    that are edited come first."""
    out = {}
    for kind in dict.fromkeys([kinds[r["attribute"]] for r in recs if r["attribute"] in kinds] + list(kinds.values())):
        kept = list(_kept_by_item(recs, strength, kinds, kind).values())
        kept_if_success = list(_kept_by_item(recs, strength, kinds, kind, successful_only=True).values())
        success = [(_edit_at(r, strength) or {}).get("success") for r in recs if kinds.get(r["attribute"]) == kind]
        out[kind] = {"success": _mean(success), "kept": _mean(kept), "kept_if_success": _mean(kept_if_success)}
        out[kind].update({f"{k}_ci": ci for k, v in (("success", success), ("kept", kept),
                                                     ("kept_if_success", kept_if_success))
                          if (ci := rate_interval(v)) is not None})
    return out


def _kept_by_item(recs: list[dict[str, Any]], strength: float, kinds: dict[str, str], kind: str,
                  successful_only: bool = False) -> dict[str, bool]:
    """Item id -> whether the edit at ``strength`` kept every attribute of ``kind`` it had to preserve (a failed
    unit or a missing edit did not). ``successful_only``: only the items whose edit reached its target."""
    out = {}
    for r in recs:
        e = _edit_at(r, strength)
        if successful_only and not (e or {}).get("success"):
            continue
        out[r["id"]] = e is not None and all(v for a, v in e.get("preserved", {}).items() if kinds.get(a) == kind)
    return out


def never_edited(kinds: dict[str, str], attributes: Sequence[str]) -> list[str]:
    """The kinds no task edits (e.g. content the captions never name): what every edit must keep."""
    edited = {kinds.get(a) for a in attributes}
    return [k for k in dict.fromkeys(kinds.values()) if k not in edited]


def summarize(results: list[dict[str, Any]], strengths: Sequence[float],
              internal: dict[str, dict[str, Any]] | None = None, kinds: dict[str, str] | None = None
              ) -> dict[str, Any]:
    """The summary of every (model, method): rates and means per strength, per-attribute rates, disentanglement;
    with ``kinds`` (attribute -> kind), rates per attribute kind too."""
    from eimsdk.bench.runner import model_label
    from eimsdk.metrics.disentanglement import dci_disentanglement, matrix_from_changes

    ref = reference_strength(strengths)
    models = list(dict.fromkeys(model_label(r["model"]) for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    attributes = list(dict.fromkeys(r["attribute"] for r in results))
    metric_keys = list(dict.fromkeys(k for r in results for e in r.get("edits", []) for k in e.get("metrics", {})))
    table: dict[str, dict[str, Any]] = {}
    untouched = never_edited(kinds, attributes) if kinds else []
    kept: dict[str, dict[str, dict[str, dict[str, bool]]]] = {}  # model -> kind -> method -> item id -> kept
    kept_if_success: dict[str, dict[str, dict[str, dict[str, bool]]]] = {}  # the same, successful edits only
    for model in models:
        table[model] = {}
        for method in methods:
            recs = [r for r in results if model_label(r["model"]) == model and r["method"] == method]
            if not recs:
                continue
            entry: dict[str, Any] = {"n": len(recs), "errors": sum("error" in r for r in recs)}
            finds = [r["find_cost"] for r in recs if "find_cost" in r]
            entry["find_model_evals"] = _mean([c["model_evals"] for c in finds])
            entry["find_seconds"] = _mean([c["seconds"] for c in finds])
            entry["find_peak_mb"] = max((c["peak_memory_mb"] for c in finds), default=None)
            entry["by_strength"] = {}
            for s in strengths:
                edits = [_edit_at(r, s) or {"success": False, "preserved_all": False, "error": r.get("error")}
                         for r in recs]
                precise = [None if e.get("success") is None else bool(e.get("success")) and bool(e.get("preserved_all"))
                           for e in edits]
                row = {
                    "success": _mean([e.get("success") for e in edits]),
                    "preserved": _mean([e.get("preserved_all") for e in edits]),
                    "precise": _mean(precise),
                    "success_ci": rate_interval(e.get("success") for e in edits),
                    "preserved_ci": rate_interval(e.get("preserved_all") for e in edits),
                    "precise_ci": rate_interval(precise),
                    "metrics": {k: v for k in metric_keys
                                if (v := _mean([e.get("metrics", {}).get(k) for e in edits])) is not None},
                    "apply_model_evals": _mean([e.get("cost", {}).get("model_evals") for e in edits]),
                    "apply_seconds": _mean([e.get("cost", {}).get("seconds") for e in edits]),
                    "apply_peak_mb": max((e["cost"]["peak_memory_mb"] for e in edits if "cost" in e), default=None),
                }
                names = sorted({a for e in edits for a in e.get("preserved", {})})
                row["preserved_by_attribute"] = {a: _mean([e["preserved"][a] for e in edits
                                                           if a in e.get("preserved", {})]) for a in names}
                entry["by_strength"][f"{s:g}"] = {k: v for k, v in row.items() if v is not None and v != {}}
            entry["by_attribute"] = {}
            for a in attributes:
                edits = [_edit_at(r, ref) or {"success": False, "preserved_all": False} for r in recs
                         if r["attribute"] == a]
                if edits:
                    entry["by_attribute"][a] = {"n": len(edits), "success": _mean([e.get("success") for e in edits]),
                                                "preserved": _mean([e.get("preserved_all") for e in edits]),
                                                "success_ci": rate_interval(e.get("success") for e in edits),
                                                "preserved_ci": rate_interval(e.get("preserved_all") for e in edits)}
            changes = [(r["attribute"], _unexpected_changes(r, _edit_at(r, ref))) for r in recs if _edit_at(r, ref)]
            if changes:
                rows = [a for a in attributes if any(c[0] == a for c in changes)]
                cols = [a for a in rows if a in changes[0][1]] + [a for a in changes[0][1] if a not in rows]
                entry["disentanglement"] = dci_disentanglement(matrix_from_changes(changes, rows, cols)).as_dict()
            if internal and method in internal.get(model, {}):
                entry["internal"] = internal[model][method]
            if kinds:
                entry["by_kind"] = by_kind(recs, ref, kinds)
            for kind in untouched:
                kept.setdefault(model, {}).setdefault(kind, {})[method] = _kept_by_item(recs, ref, kinds, kind)
                kept_if_success.setdefault(model, {}).setdefault(kind, {})[method] = _kept_by_item(
                    recs, ref, kinds, kind, successful_only=True)
            table[model][method] = entry
    paired = {model: {f"{s:g}": paired_tests({method: _precise_by_item(results, model, method, s) for method in methods
                                               if table[model].get(method)}) for s in strengths} for model in models}
    out = {"reference_strength": ref, "strengths": list(strengths), "models": models, "methods": methods,
           "attributes": attributes, "metrics": metric_keys, "items": len({r["id"] for r in results}),
           "table": table, "paired": paired}
    if untouched:
        out["paired_kept"] = {model: {kind: paired_tests(by_method) for kind, by_method in per_kind.items()}
                              for model, per_kind in kept.items()}
        # on the tasks both methods edited successfully, so that missing an edit earns no credit for keeping
        out["paired_kept_if_success"] = {model: {kind: paired_tests(by_method) for kind, by_method in per_kind.items()}
                                         for model, per_kind in kept_if_success.items()}
    return out


def _unexpected_changes(rec: dict[str, Any], edit: dict[str, Any]) -> dict[str, float]:
    """The edit's reader changes, where an attribute the item expects to change besides the edited one (toy2's
    texture phase under a background flip) counts as changed only when it does not read as expected."""
    changes = dict(edit["changes"])
    for name, value in rec.get("expected", {}).items():
        if name != rec["attribute"] and name in changes and name in edit.get("read", {}) \
                and not isinstance(value, (int, float)):
            changes[name] = float(edit["read"][name] != value)
    return changes


def _precise_by_item(results: list[dict[str, Any]], model: str, method: str, strength: float) -> dict[str, bool]:
    """Item id -> whether the edit at ``strength`` was precise (a failed unit or a missing edit is not)."""
    from eimsdk.bench.runner import model_label

    out = {}
    for r in results:
        if model_label(r["model"]) == model and r["method"] == method:
            e = _edit_at(r, strength) or {}
            out[r["id"]] = bool(e.get("success")) and bool(e.get("preserved_all"))
    return out


# ------------------------------------------------------------------------------------------------ markdown
def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _rate(row: dict[str, Any], key: str) -> str:
    """A rate with its interval: ``0.68 [0.61, 0.74]``."""
    ci = row.get(f"{key}_ci")
    return _fmt(row.get(key)) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def command_line(config: Any) -> str:
    """The ``eimsdk bench`` command that reproduces ``config`` (MANIFEST left as a placeholder)."""
    c = config.model_dump() if hasattr(config, "model_dump") else dict(config)
    parts = ["eimsdk bench MANIFEST", "--models " + " ".join(c["models"]), "--methods " + " ".join(c["methods"]),
             "--strengths " + " ".join(f"{s:g}" for s in c["strengths"]), "--out OUT"]
    if c.get("reader", "toy") != "toy":
        parts.append(f"--reader {c['reader']}")
    parts += [f"--reader-set {k}={json.dumps(v)}" for k, v in c.get("reader_config", {}).items()]
    parts += [f"--manip-set {k}={json.dumps(v)}" for k, v in c.get("manipulator_config", {}).items()]
    if c.get("metrics", ["psnr", "ssim"]) != ["psnr", "ssim"]:
        parts.append("--metrics " + " ".join(c["metrics"]))
    if c.get("internal"):
        parts.append(f"--internal {c['internal']}")
    return " ".join(parts)


def markdown(summary: dict[str, Any], config: Any, plots: list[str]) -> str:
    ref = f"{summary['reference_strength']:g}"
    lines = [
        "# eimsdk benchmark report", "",
        f"{summary['items']} items x {len(summary['models'])} model(s) x {len(summary['methods'])} method(s); "
        f"strengths {', '.join(f'{s:g}' for s in summary['strengths'])}; tables at strength {ref}.", "",
        f"Regenerate: `{command_line(config)}`", "",
        f"## Precise edits: success and every other attribute preserved (method x model, strength {ref})", "",
        "Rates with their 95% Wilson intervals.", "",
        "| method | " + " | ".join(summary["models"]) + " |", "|---|" + "---|" * len(summary["models"]),
    ]
    for method in summary["methods"]:
        cells = [_rate(summary["table"][m].get(method, {}).get("by_strength", {}).get(ref, {}), "precise")
                 for m in summary["models"]]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += [
        "", f"## Editing (strength {ref})", "",
        "| model | method | success | preserved | precise | " + "".join(f"{k} | " for k in summary["metrics"])
        + "find evals | find s | apply evals | apply s | errors |",
        "|---|---|---|---|---|" + "---|" * (len(summary["metrics"]) + 5),
    ]
    for model, methods in summary["table"].items():
        for method, e in methods.items():
            r = e["by_strength"].get(ref, {})
            scores = "".join(f"{_fmt(r.get('metrics', {}).get(k), 3)} | " for k in summary["metrics"])
            lines.append(f"| {model} | {method} | {_rate(r, 'success')} | {_rate(r, 'preserved')} | "
                         f"{_rate(r, 'precise')} | {scores}"
                         f"{_fmt(e.get('find_model_evals'), 0)} | {_fmt(e.get('find_seconds'))} | "
                         f"{_fmt(r.get('apply_model_evals'), 0)} | {_fmt(r.get('apply_seconds'))} | {e['errors']} |")
    lines += ["", f"## Paired tests (precise edits, strength {ref})", "",
              "Exact two-sided McNemar test on the tasks both methods ran: `a only` / `b only` count the tasks only "
              "one of them edited precisely. Claim a difference only where p < 0.05.", "",
              "| model | a | b | n | rate a | rate b | a - b | a only | b only | p |", "|---" * 10 + "|"]
    for model, by_strength in summary.get("paired", {}).items():
        for t in by_strength.get(ref, []):
            lines.append(f"| {model} | {t['a']} | {t['b']} | {t['n']} | {_fmt(t['rate_a'])} | {_fmt(t['rate_b'])} | "
                         f"{_fmt(t['difference'])} | {t['only_a']} | {t['only_b']} | {format_p(t['p_value'])} |")
    lines += ["", "## Disentanglement", "",
              "Reader-based D (DCI-style, 1 = each edit moves one reader) and its targeted share (mean p_ii); "
              "reader-free S (1 - mean |cos| of attribute responses) when computed.", "",
              "| model | method | D (reader) | targeted | S (reader-free) |", "|---|---|---|---|---|"]
    for model, methods in summary["table"].items():
        for method, e in methods.items():
            d = e.get("disentanglement", {})
            targeted = [v for v in d.get("targeted", {}).values() if v is not None]
            s = e.get("internal", {}).get("score")
            lines.append(f"| {model} | {method} | {_fmt(d.get('overall'))} | "
                         f"{_fmt(float(np.mean(targeted)) if targeted else None)} | {_fmt(s)} |")
    attrs = summary["attributes"]
    lines += ["", f"## Per attribute: success / preserved (strength {ref})", "",
              "| model | method | " + " | ".join(attrs) + " |", "|---|---|" + "---|" * len(attrs)]
    for model, methods in summary["table"].items():
        for method, e in methods.items():
            cells = [f"{_fmt(e['by_attribute'].get(a, {}).get('success'))} / "
                     f"{_fmt(e['by_attribute'].get(a, {}).get('preserved'))}" for a in attrs]
            lines.append(f"| {model} | {method} | " + " | ".join(cells) + " |")
    kinds = list(dict.fromkeys(k for methods in summary["table"].values() for e in methods.values()
                               for k in e.get("by_kind", {})))
    if kinds:
        lines += ["", f"## Per attribute kind: success of edits along it / share of edits keeping it (strength {ref})",
                  "", "| model | method | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
        for model, methods in summary["table"].items():
            for method, e in methods.items():
                cells = [f"{_rate(e['by_kind'].get(k, {}), 'success')} / {_rate(e['by_kind'].get(k, {}), 'kept')}"
                         for k in kinds]
                lines.append(f"| {model} | {method} | " + " | ".join(cells) + " |")
        lines += ["", f"## Per attribute kind: share of the successful edits keeping it (strength {ref})", "",
                  "An edit that misses its target keeps what it never touched; this counts only the edits that "
                  "reached it.", "", "| model | method | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
        for model, methods in summary["table"].items():
            for method, e in methods.items():
                cells = [_rate(e["by_kind"].get(k, {}), "kept_if_success") for k in kinds]
                lines.append(f"| {model} | {method} | " + " | ".join(cells) + " |")
    for key, what, on in (("paired_kept", "edits", "the tasks both methods ran"),
                          ("paired_kept_if_success", "successful edits",
                           "the tasks both methods edited successfully (a missed edit earns no credit for keeping)")):
        for model, by_kind_tests in summary.get(key, {}).items():
            for kind, tests in by_kind_tests.items():
                lines += ["", f"## Paired tests ({what} that keep every {kind} attribute, {model}, strength {ref})",
                          "", f"No task edits an attribute of kind `{kind}`, so every edit must keep them all. Exact "
                          f"two-sided McNemar test on {on}; `a only` / `b only` count the tasks only one of them "
                          "kept them all in.", "",
                          "| a | b | n | rate a | rate b | a - b | a only | b only | p |", "|---" * 9 + "|"]
                lines += [f"| {t['a']} | {t['b']} | {t['n']} | {_fmt(t['rate_a'])} | {_fmt(t['rate_b'])} | "
                          f"{_fmt(t['difference'])} | {t['only_a']} | {t['only_b']} | {format_p(t['p_value'])} |"
                          for t in tests]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ plots
def _save(fig, path: Path) -> str:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    return path.name


def plot_strength_curves(summary: dict[str, Any], path: Path) -> str:
    """Success and preservation against strength: one column per model, one line per method."""
    from matplotlib.figure import Figure

    models = summary["models"]
    fig = Figure(figsize=(4.2 * len(models), 6.5))
    axes = fig.subplots(2, len(models), squeeze=False)
    xs = summary["strengths"]
    for j, model in enumerate(models):
        for method, e in summary["table"][model].items():
            for i, key in enumerate(("success", "preserved")):
                ys = [e["by_strength"].get(f"{s:g}", {}).get(key) for s in xs]
                axes[i][j].plot(xs, [np.nan if y is None else y for y in ys], marker="o", label=method)
        for i, key in enumerate(("success", "preserved")):
            ax = axes[i][j]
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.set_title(f"{model}: {key}", fontsize=10)
            ax.set_xlabel("strength")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_matrices(summary: dict[str, Any], model: str, path: Path) -> str | None:
    """The reader-change matrix M of each method as a heatmap, with D in the title."""
    from matplotlib.figure import Figure

    entries = [(m, e["disentanglement"]) for m, e in summary["table"][model].items() if "disentanglement" in e]
    if not entries:
        return None
    width = max(len(e[1]["matrix"]["cols"]) for e in entries) * 0.42 + 1.6  # inches: each cell holds "0.00"
    height = max(len(e[1]["matrix"]["rows"]) for e in entries) * 0.42 + 2.0
    ncols = min(len(entries), max(1, int(24 // width)))  # wrap into rows rather than shrink the cells
    nrows = -(-len(entries) // ncols)
    fig = Figure(figsize=(width * ncols, height * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(entries):]:
        ax.set_axis_off()
    for ax, (method, d) in zip(axes, entries):
        mat = np.asarray(d["matrix"]["matrix"])
        ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(d["matrix"]["cols"])), d["matrix"]["cols"], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(d["matrix"]["rows"])), d["matrix"]["rows"], fontsize=8)
        for (i, j), v in np.ndenumerate(mat):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
        ax.set_title(f"{_wrapped(method, 40)}: D = {_fmt(d['overall'])}", fontsize=9)
        ax.set_xlabel("reader changed")
        ax.set_ylabel("edited attribute")
    fig.suptitle(f"{model}: P(reader j changes | edit along i)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _wrapped(label: str, width: int = 22) -> str:
    """A method label broken over lines after its name and its settings' commas, so neighbouring column titles do not
    overlap."""
    import textwrap

    return "\n".join(textwrap.wrap(label.replace(":", ": ").replace(",", ", "), width, break_long_words=False)) or label


def plot_examples(out: Path, results: list[dict[str, Any]], model: str, strength: float, path: Path,
                  max_rows: int = 8) -> str | None:
    """Example edits: one row per attribute (first item), source then each method at ``strength``."""
    from matplotlib.figure import Figure
    from PIL import Image

    from eimsdk.bench.runner import model_label

    recs = [r for r in results if model_label(r["model"]) == model]
    methods = list(dict.fromkeys(r["method"] for r in recs))
    rows: list[str] = []
    for r in recs:
        if r["id"] not in rows and r.get("source_image") and not any(
                x["attribute"] == r["attribute"] for x in recs if x["id"] in rows):
            rows.append(r["id"])
    rows = rows[:max_rows]
    if not rows:
        return None
    fig = Figure(figsize=(1.6 * (len(methods) + 1), 1.75 * len(rows)))
    axes = fig.subplots(len(rows), len(methods) + 1, squeeze=False)
    missing = 0
    for i, item_id in enumerate(rows):
        first = next(r for r in recs if r["id"] == item_id)
        cells = [("source", first["source_image"], None)]
        for method in methods:
            rec = next((r for r in recs if r["id"] == item_id and r["method"] == method), None)
            edit = _edit_at(rec, strength) if rec else None
            cells.append((method, edit.get("image") if edit else None, edit))
        for j, (label, rel, edit) in enumerate(cells):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if rel and (out / rel).is_file():
                with Image.open(out / rel) as im:
                    ax.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
            elif rel:  # a unit copied from another run's items/ comes without its images
                ax.text(0.5, 0.5, "image not\nin OUT", ha="center", va="center", fontsize=7, color="0.4",
                        transform=ax.transAxes)
                missing += 1
            mark = "" if edit is None else ("precise" if edit.get("success") and edit.get("preserved_all") else
                                            "leaky" if edit.get("success") else "miss")
            if i == 0:
                ax.set_title(_wrapped(label), fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{first['attribute']}\n-> {', '.join(map(str, first['expected'].values())) or '?'}",
                              fontsize=7)
            elif mark:
                ax.set_xlabel(mark, fontsize=7)
    title = f"{model}: edits at strength {strength:g}"
    if missing:
        title += f" ({missing} image(s) not in this output folder)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def write_report(out: str | Path, results: list[dict[str, Any]], config: Any,
                 internal: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write ``summary.json``, ``report.md`` and ``plots/*.png`` under ``out``; return the summary."""
    out = Path(out)
    strengths = config.strengths if hasattr(config, "strengths") else config["strengths"]
    summary = summarize(results, strengths, internal, attribute_kinds(out / "manifest.jsonl"))
    plots_dir = out / "plots"
    plots = [f"plots/{plot_strength_curves(summary, plots_dir / 'strength_curves.png')}"]
    for model in summary["models"]:
        name = plot_matrices(summary, model, plots_dir / f"matrix_{model}.png")
        if name:
            plots.append(f"plots/{name}")
        name = plot_examples(out, results, model, summary["reference_strength"], plots_dir / f"examples_{model}.png")
        if name:
            plots.append(f"plots/{name}")
    summary["plots"] = plots
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True))
    atomic_write_text(out / "report.md", markdown(summary, config, plots))
    from eimsdk.bench.compare import comparison_markdown, comparison_rows, model_pairs, pairs_markdown

    pairs = pairs_markdown(model_pairs([(summary, results)]))  # between models, when the run has several
    atomic_write_text(out / "comparison.md", comparison_markdown(comparison_rows(summary, results))
                      + (f"\nPaired tests between models (claim a difference only where p < 0.05):\n\n{pairs}"
                         if pairs else ""))
    return summary
