"""The worked backend example of docs/plugins.md, extracted from the markdown, passes the contract suite.

The encoder block becomes the module ``my_backend.encoder`` and the test block of "Running the contract suite on
it" runs as written, so the page cannot drift from code that works.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def _block(first_line: str) -> str:
    """The fenced python block of docs/plugins.md whose first line is ``first_line``."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    matches = [b for b in blocks if b.startswith(first_line + "\n")]
    assert len(matches) == 1, f"docs/plugins.md must have one python block starting with {first_line!r}"
    return matches[0]


def _install_example() -> types.ModuleType:
    package = types.ModuleType("my_backend")
    package.__path__ = []
    module = types.ModuleType("my_backend.encoder")
    sys.modules.update({"my_backend": package, "my_backend.encoder": module})
    exec(compile(_block("# my_backend/encoder.py"), f"{DOC}:my_backend/encoder.py", "exec"), module.__dict__)
    package.encoder = module
    return module


EXAMPLE = _install_example()
_test_namespace: dict = {}
exec(compile(_block("# tests/test_my_backend.py"), f"{DOC}:tests/test_my_backend.py", "exec"), _test_namespace)

#: the documented test class, collected here as written
TestDocumentedBackend = _test_namespace["TestMyBackend"]


def test_the_example_is_about_150_lines_and_matches_the_diffusers_pipeline(tmp_path):
    from diffusers import StableDiffusionPipeline

    from eimsdk.testing.tiny import build_tiny_pipeline

    assert 100 <= len(_block("# my_backend/encoder.py").splitlines()) <= 180
    build_tiny_pipeline("sd", tmp_path)
    encoder = EXAMPLE.MyEncoder.from_pretrained(str(tmp_path))
    pipe = StableDiffusionPipeline.from_pretrained(str(tmp_path))
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=2, guidance_scale=4.0, height=32, width=32)
    ours = encoder.generate(["a red circle"], generator=torch.Generator().manual_seed(0), **kw)
    theirs = pipe(["a red circle"], generator=torch.Generator().manual_seed(0), output_type="pt", **kw).images
    assert (ours - (theirs * 2 - 1)).abs().max() <= 1e-4


@pytest.fixture(scope="module", autouse=True)
def _uninstall_example():
    yield
    for name in ("my_backend.encoder", "my_backend"):
        sys.modules.pop(name, None)
