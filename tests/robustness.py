"""Shared checks of the robustness suite (tests/test_robustness_*.py): how a refusal and an untouched input look."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from eimsdk.cli import main


class ModelReached(Exception):
    """Raised instead of loading a model: the command accepted every argument it checks up front."""


@pytest.fixture
def stop_at_model(monkeypatch):
    """Commands stop where they would load a model, so argument checks are tested in milliseconds."""
    from eimsdk.editor import Editor

    def reached(cls, *args, **kwargs):
        raise ModelReached

    monkeypatch.setattr(Editor, "from_pretrained", classmethod(reached))


def run_cli(capsys, argv: list[str]) -> tuple[int | None, str]:
    """(exit status, stderr) of the CLI run in-process; status None when it got as far as the model."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    except ModelReached:
        code = None
    return code, capsys.readouterr().err


def assert_refused(code: int | None, err: str, *names: str) -> None:
    """Exit status 2 with one line, no traceback, naming one of ``names`` (the argument)."""
    lines = [line for line in err.strip().splitlines() if not line.startswith("eimsdk: warning:")]
    assert code == 2, (code, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert any(n in lines[0] or repr(n)[1:-1] in lines[0] for n in names), (names, lines[0])


def digest_tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes: the proof that nothing was changed or added."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
