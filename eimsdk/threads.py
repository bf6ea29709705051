"""How many CPU threads torch may use: enough to be fast, never more than the cores that are free.

PyTorch's OpenMP threads spin while they wait; when they outnumber the free cores (another busy process, or
several benchmark workers on one machine) a run gets many times slower. The CLI and ``eimsdk bench`` workers
therefore pick ``EIMSDK_NUM_THREADS`` when it is set, else keep ``OMP_NUM_THREADS`` when that is set, else use
the cores this process may run on, divided among the launcher's processes on this node (``LOCAL_WORLD_SIZE``)
and capped by the cores not busy with other work (the 1-minute load average), at least one.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

from eimsdk.errors import InputError


def choose_num_threads(env: Mapping[str, str] | None = None, *, cores: int | None = None,
                       load: float | None = None) -> int:
    """The thread count by the policy above; ``cores`` and ``load`` default to this machine's."""
    env = os.environ if env is None else env
    raw = env.get("EIMSDK_NUM_THREADS", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise InputError(f"EIMSDK_NUM_THREADS={raw!r} is invalid; use a positive whole number such as 1")
        return int(raw)
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return int(omp)
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # not available on this platform
            load = 0.0
    local = env.get("LOCAL_WORLD_SIZE", "1").strip()
    share = cores // max(1, int(local)) if local.isdigit() else cores
    free = int(cores - load + 0.5)
    return max(1, min(share, free))


def apply_num_threads(env: Mapping[str, str] | None = None) -> int:
    """Set the chosen count for torch (through the environment before torch loads, directly after)."""
    n = choose_num_threads(env)
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ.setdefault("MKL_NUM_THREADS", str(n))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return n
