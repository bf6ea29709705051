"""Output pre-flight: refuse an output path that cannot be written, before any model loads.

Checked: a directory given as an output file, a file standing where a parent folder must be, a folder that
cannot be written (or created), an output that is one of the inputs (the same path, or the same file through
a link), and, for images, a suffix whose format eimsdk cannot write. A missing folder is created when it can
be. Nothing is written by the check itself except a probe file that is removed at once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

from eimsdk.errors import InputError


def check_output_file(path: str | os.PathLike, *, name: str = "--out", inputs: Iterable[str | os.PathLike] = (),
                      image: bool = False) -> Path:
    """Refuse ``path`` as an output file unless it can be written without harming an input."""
    path = Path(path)
    if not str(path).strip() or path.name in ("", ".", ".."):
        raise InputError(f"{name}={str(path)!r} is not a file name; give a path such as out/edited.png")
    if path.is_dir():
        raise InputError(f"{name}={str(path)!r} is a folder; give a file name inside it, such as "
                         f"{str(path / ('edited.png' if image else 'out'))!r}")
    if image:
        from eimsdk.records import image_format

        image_format(path, name)
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise InputError(f"{name}={str(path)!r} is the input {str(source)!r}; writing it would destroy the "
                             "input: choose another output path")
    _check_writable_folder(path.parent, name, str(path))
    return path


def check_output_dir(path: str | os.PathLike, *, name: str = "--out") -> Path:
    """Refuse ``path`` as an output folder unless it is (or can be created as) a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{name}={str(path)!r} is a file, not a folder; give a folder path")
    _check_writable_folder(path, name, str(path))
    return path


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _check_writable_folder(folder: Path, name: str, given: str) -> None:
    """The folder, or its nearest existing ancestor when it is missing, must be a folder we can write in."""
    existing = folder if str(folder) else Path(".")
    while not existing.exists():
        if existing.is_symlink():
            raise InputError(f"{name}={given!r}: {str(existing)!r} is a broken link")
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{name}={given!r}: {str(existing)!r} is a file, so no folder can be made there; choose "
                         "another output path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".eimsdk-probe-", dir=existing)
    except OSError as exc:
        what = "the folder" if existing == folder else f"the folder {str(folder)!r} cannot be created: its parent"
        raise InputError(f"{name}={given!r}: {what} {str(existing)!r} is not writable ({exc.strerror}); choose "
                         "a writable folder") from None
    os.close(fd)
    os.unlink(probe)
