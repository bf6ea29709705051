"""Reader-based disentanglement: a DCI-style score (after Eastwood & Williams, 2018) of the matrix ``M_ij``.

``M_ij`` is how much editing along attribute ``i`` changes what reader ``j`` sees. We use the change rate:
``M_ij = (1 / N_i) sum_n [r_j(edit_n) != r_j(source_n)]`` over the ``N_i`` edits along ``i`` (categorical
readers), or the mean absolute change for continuous readers. Then

    p_ij = |M_ij| / sum_j |M_ij|
    D_i  = 1 - H(p_i.) / log m            (H the Shannon entropy, m the number of read attributes)
    rho_i = sum_j |M_ij| / sum_kj |M_kj|
    D    = sum_i rho_i D_i

``D_i = 1`` when edits along ``i`` move one reader only; ``0`` when they move every reader equally. Because
``D_i`` only measures concentration, we also report ``targeted_i = p_ii`` (the share of row ``i`` on its own
column) when rows and columns name the same attributes: a precise edit has both near 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from eimsdk.errors import InputError
from eimsdk.interfaces import AttributeReader

if TYPE_CHECKING:
    from eimsdk.editor import Editor


@dataclass
class ResponseMatrix:
    """``M_ij``: rows are edited attributes, columns read attributes; ``counts[i]`` edits went into row ``i``."""

    matrix: np.ndarray  # (m_rows, m_cols)
    rows: list[str]
    cols: list[str]
    counts: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows), "cols": list(self.cols), "counts": list(self.counts),
                "matrix": [[round(float(v), 6) for v in row] for row in self.matrix]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ResponseMatrix":
        return cls(np.asarray(data["matrix"], dtype=np.float64), list(data["rows"]), list(data["cols"]),
                   list(data.get("counts", [])))


@dataclass
class DisentanglementResult:
    """Overall and per-attribute scores, with the matrix they came from.

    ``per_attribute[i]`` and ``targeted[i]`` are ``None`` for a row that moved no reader at all (it has no
    distribution to score and weight 0); ``overall`` is NaN when no row moved anything.
    """

    overall: float
    per_attribute: dict[str, float | None]
    weights: dict[str, float]
    targeted: dict[str, float | None]
    matrix: ResponseMatrix

    def as_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None or math.isnan(v) else round(float(v), 6)

        return {"overall": r(self.overall), "per_attribute": {k: r(v) for k, v in self.per_attribute.items()},
                "weights": {k: r(v) for k, v in self.weights.items()},
                "targeted": {k: r(v) for k, v in self.targeted.items()}, "matrix": self.matrix.as_dict()}


def dci_disentanglement(matrix: ResponseMatrix | np.ndarray | Sequence[Sequence[float]],
                        rows: Sequence[str] | None = None, cols: Sequence[str] | None = None) -> DisentanglementResult:
    """The DCI-style disentanglement of ``matrix`` (a :class:`ResponseMatrix` or an array with names)."""
    if isinstance(matrix, ResponseMatrix):
        m = np.asarray(matrix.matrix, dtype=np.float64)
        rows, cols, counts = list(matrix.rows), list(matrix.cols), list(matrix.counts)
    else:
        m = np.asarray(matrix, dtype=np.float64)
        counts = []
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise InputError(f"matrix must be 2-D (edited attributes x read attributes), got shape {m.shape}")
    if not np.isfinite(m).all():
        raise InputError("matrix contains NaN or Inf; every entry must be a finite change of a reader")
    rows = list(rows) if rows is not None else [f"attr{i}" for i in range(m.shape[0])]
    cols = list(cols) if cols is not None else (list(rows) if m.shape[0] == m.shape[1] else
                                               [f"read{j}" for j in range(m.shape[1])])
    if len(rows) != m.shape[0] or len(cols) != m.shape[1]:
        raise InputError(f"rows ({len(rows)}) and cols ({len(cols)}) must match the matrix shape {m.shape}")
    a = np.abs(m)  # (m_rows, m_cols)
    row_mass = a.sum(axis=1)  # (m_rows,)
    total = float(row_mass.sum())
    per: dict[str, float | None] = {}
    targeted: dict[str, float | None] = {}
    weights: dict[str, float] = {}
    log_m = math.log(m.shape[1])
    for i, name in enumerate(rows):
        weights[name] = float(row_mass[i] / total) if total > 0 else 0.0
        if row_mass[i] <= 0:
            per[name] = targeted[name] = None
            continue
        p = a[i] / row_mass[i]
        nz = p[p > 0]
        entropy = float(-(nz * np.log(nz)).sum())
        per[name] = 1.0 - entropy / log_m if log_m > 0 else 1.0
        targeted[name] = float(p[cols.index(name)]) if name in cols else None
    overall = (sum(weights[n] * per[n] for n in rows if per[n] is not None) if total > 0 else float("nan"))
    return DisentanglementResult(overall=float(overall), per_attribute=per, weights=weights, targeted=targeted,
                                 matrix=ResponseMatrix(m, rows, cols, counts))


# ------------------------------------------------------------------------------------------ building M
def reader_changes(source: Mapping[str, Any], edited: Mapping[str, Any]) -> dict[str, float]:
    """Per attribute: 1.0 if a categorical reading changed (else 0.0), the absolute change for numbers."""
    out = {}
    for name, before in source.items():
        after = edited[name]
        if isinstance(before, (int, float)) and not isinstance(before, bool):
            out[name] = abs(float(after) - float(before))
        else:
            out[name] = float(after != before)
    return out


def matrix_from_changes(records: Iterable[tuple[str, Mapping[str, float]]], rows: Sequence[str] | None = None,
                        cols: Sequence[str] | None = None) -> ResponseMatrix:
    """Average per-edit reader changes ``(edited attribute, {read attribute: change})`` into ``M_ij``."""
    records = list(records)
    if not records:
        raise InputError("records is empty; pass at least one (attribute, changes) pair")
    rows = list(rows) if rows is not None else sorted({a for a, _ in records})
    cols = list(cols) if cols is not None else list(records[0][1])
    sums = np.zeros((len(rows), len(cols)))
    counts = [0] * len(rows)
    for attribute, changes in records:
        if attribute not in rows:
            continue
        i = rows.index(attribute)
        counts[i] += 1
        for j, col in enumerate(cols):
            if col not in changes:
                raise InputError(f"a record for attribute {attribute!r} has no change for reader column {col!r}; "
                                 f"it has {sorted(changes)}")
            sums[i, j] += changes[col]
    means = sums / np.maximum(np.asarray(counts, dtype=np.float64), 1.0)[:, None]
    return ResponseMatrix(means, rows, cols, counts)


@dataclass
class EditTask:
    """One edit for :func:`build_response_matrix`: an image, the prompt that describes it, the attribute the
    target prompt(s) change."""

    image: Any
    prompt: str
    attribute: str
    target_prompts: list[str]


def build_response_matrix(editor: "Editor", reader: AttributeReader, tasks: Sequence[EditTask], *,
                          method: str = "hsds", strength: float = 1.0, seed: int = 0,
                          size: tuple[int, int] | None = None, progress: bool = False,
                          **finder_config: Any) -> ResponseMatrix:
    """Edit every task's image along its attribute's direction and average how each reader changes into ``M``.

    Rows are the tasks' attributes (in first-seen order), columns every attribute the reader reads. Task ``k``
    uses seed ``seed + k``; ``editor`` finds with ``method`` and applies with its own manipulator.
    """
    from eimsdk.images import to_pil

    if not tasks:
        raise InputError("tasks is empty; pass at least one EditTask per attribute you want a row for")
    for k, task in enumerate(tasks):
        reader.check(task.attribute)
        if not task.target_prompts:
            raise InputError(f"tasks[{k}].target_prompts is empty; give the prompt that describes the edited image")
    records = []
    iterator = enumerate(tasks)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=len(tasks), desc="response matrix")
    for k, task in iterator:
        latent = editor.encode(task.image, task.prompt, size=size)
        direction = editor.find_direction(None, [task.prompt] * len(task.target_prompts), task.target_prompts,
                                          method=method, seed=seed + k, latent=latent, **finder_config)
        edit = editor.apply(None, task.prompt, direction, strength, latent=latent)
        before, after = reader.read(to_pil(editor.source_pixels(task.image, latent)) + edit.images)
        records.append((task.attribute, reader_changes(before, after)))
    rows = list(dict.fromkeys(t.attribute for t in tasks))
    return matrix_from_changes(records, rows, list(reader.attributes))
