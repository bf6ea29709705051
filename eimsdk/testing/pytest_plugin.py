"""pytest plugin (entry point ``pytest11``): fixtures for eimsdk and for plugin authors.

Fixtures:

- ``tiny_pipeline_path(family)``: a folder with a tiny diffusers pipeline of ``family`` (cached per session).
- ``fresh_plugin_manager``: a :class:`eimsdk.plugins.PluginManager` built from the installed entry points.
- ``scene_image``: a small RGB test image (PIL).
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_pipeline_path(tmp_path_factory):
    cache: dict[str, object] = {}

    def make(family: str):
        if family not in cache:
            from eimsdk.testing.tiny import build_tiny_pipeline

            path = tmp_path_factory.mktemp(f"tiny-{family}")
            build_tiny_pipeline(family, path)
            cache[family] = path
        return cache[family]

    return make


@pytest.fixture
def fresh_plugin_manager():
    from eimsdk.plugins import PluginManager

    return PluginManager()


@pytest.fixture
def scene_image():
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (32, 32), (240, 240, 240))
    ImageDraw.Draw(im).ellipse((6, 6, 22, 22), fill=(220, 30, 30))
    return im
