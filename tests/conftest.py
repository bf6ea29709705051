import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread per process, set before torch is imported: on shared cores, spinning OpenMP threads make the suite
# several times slower (eimsdk.threads). Subprocesses and in-process CLI calls inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("EIMSDK_NUM_THREADS", "1")

import torch  # noqa: E402 - after the environment above

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def benchmark_script(request):
    """The module of ``benchmarks/<name>.py``, where ``name`` is the test module's ``SCRIPT_NAME``."""
    name = request.module.SCRIPT_NAME
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fakes_installed(monkeypatch):
    """The CLI's process-wide plugin manager, with the fake world of ``test_bench_world`` added for this test only."""
    import eimsdk.plugins
    from test_bench_world import plugin_manager

    monkeypatch.setattr(eimsdk.plugins, "_MANAGER", plugin_manager())
    return eimsdk.plugins.get_plugin_manager()
