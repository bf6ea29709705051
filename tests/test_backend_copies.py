"""Code copied from diffusers stays identical to the installed diffusers source (whitespace aside).

Every ``# Copied from diffusers.<module>.<name>`` marker in ``eimsdk/`` and ``plugins/`` names the object; the
function or method that follows the marker must equal that object's source.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^(?P<indent>\s*)# Copied from (?P<target>diffusers\.[\w.]+)\s*$")


def _copies() -> list[tuple[str, int, str, str]]:
    """(file, line, target, copied source) for every marker."""
    found = []
    for path in sorted([*ROOT.joinpath("eimsdk").rglob("*.py"), *ROOT.joinpath("plugins").rglob("*.py")]):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            match = MARKER.match(line)
            if not match:
                continue
            indent = len(match["indent"])
            body = [lines[i + 1]]
            for following in lines[i + 2:]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                body.append(following)
            found.append((str(path.relative_to(ROOT)), i + 1, match["target"], "\n".join(body)))
    return found


def _resolve(target: str):
    """``diffusers.a.b.Class.method`` -> the object: import the longest module prefix, then get attributes."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(target)


def _normalise(source: str) -> str:
    return " ".join(source.split())


COPIES = _copies()


def test_the_tree_has_copies_to_check():
    assert COPIES, "no '# Copied from diffusers...' marker found; the check below would prove nothing"


@pytest.mark.parametrize("path, line, target, copied", COPIES, ids=[f"{c[0]}:{c[1]}" for c in COPIES])
def test_copy_is_identical_to_the_installed_diffusers(path, line, target, copied):
    original = inspect.getsource(_resolve(target))
    assert _normalise(copied).rstrip() == _normalise(original).rstrip(), (
        f"{path}:{line} no longer matches {target} of the installed diffusers; copy it again")

