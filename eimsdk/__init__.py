"""eimsdk: zero-shot, fine-grained, text-guided image editing with diffusion transformers.

Encode an image and its prompt into the joint latent, Identify an editing direction with HSDS, Manipulate
the latent along it. ``import eimsdk`` is cheap: torch and diffusers load only when a model is used.
"""

from __future__ import annotations

from typing import Any

from eimsdk.hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "Editor": "eimsdk.editor",
    "Encoder": "eimsdk.interfaces",
    "DirectionFinder": "eimsdk.interfaces",
    "Manipulator": "eimsdk.interfaces",
    "EditMetric": "eimsdk.interfaces",
    "AttributeReader": "eimsdk.interfaces",
    "Conditioning": "eimsdk.records",
    "JointLatent": "eimsdk.records",
    "Direction": "eimsdk.records",
    "EditResult": "eimsdk.records",
    "Cost": "eimsdk.cost",
    "get_plugin_manager": "eimsdk.plugins",
}

__all__ = ["__version__", "hookimpl", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eimsdk' has no attribute {name!r}")
