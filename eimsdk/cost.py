"""Cost accounting: model evaluations (forward-equivalents), wall time and peak memory of a piece of work.

``with CostMeter(encoder) as meter: ...`` then ``meter.cost``: the one way eimsdk measures a find or an edit.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import torch

if TYPE_CHECKING:
    from eimsdk.interfaces import Encoder


@dataclass
class Cost:
    """What a piece of work cost: model evaluations (forward-equivalents), wall time and peak memory."""

    model_evals: float = 0.0
    forwards: int = 0
    jvps: int = 0
    vjps: int = 0
    seconds: float = 0.0
    peak_memory_bytes: int = 0
    memory_kind: str = "rss"  # "rss" (process resident set, sampled) or "cuda" (max allocated)

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.model_evals + other.model_evals, self.forwards + other.forwards, self.jvps + other.jvps,
                    self.vjps + other.vjps, self.seconds + other.seconds,
                    max(self.peak_memory_bytes, other.peak_memory_bytes), self.memory_kind)

    def as_dict(self) -> dict[str, Any]:
        return {"model_evals": round(self.model_evals, 3), "forwards": self.forwards, "jvps": self.jvps,
                "vjps": self.vjps, "seconds": round(self.seconds, 4), "peak_memory_mb":
                round(self.peak_memory_bytes / 2**20, 2), "memory_kind": self.memory_kind}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Cost":
        """Inverse of :meth:`as_dict` (a direction's ``meta["cost"]``)."""
        return cls(model_evals=data.get("model_evals", 0.0), forwards=data.get("forwards", 0),
                   jvps=data.get("jvps", 0), vjps=data.get("vjps", 0), seconds=data.get("seconds", 0.0),
                   peak_memory_bytes=int(data.get("peak_memory_mb", 0) * 2**20),
                   memory_kind=data.get("memory_kind", "rss"))


class Timer:
    """Context manager measuring wall time and peak memory (CUDA max-allocated, else RSS sampled every 5 ms)."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds = 0.0
        self.peak = 0
        self.kind = "cuda" if self.device.type == "cuda" else "rss"

    def __enter__(self) -> "Timer":
        self._t0 = time.perf_counter()
        if self.kind == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._stop = threading.Event()
            self.peak = _rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._t0
        if self.kind == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss())


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class CostMeter(Timer):
    """``with CostMeter(encoder) as meter:`` counts the encoder's evaluations and times the block; ``meter.cost``."""

    def __init__(self, encoder: "Encoder") -> None:
        super().__init__(encoder.device)
        self.counter = encoder.counter
        self.cost = Cost()

    def __enter__(self) -> "CostMeter":
        self._snap = self.counter.snapshot()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        counts = self.counter.since(self._snap)
        self.cost = Cost(model_evals=counts["model_evals"], forwards=int(counts["forwards"]), jvps=int(counts["jvps"]),
                         vjps=int(counts["vjps"]), seconds=self.seconds, peak_memory_bytes=self.peak,
                         memory_kind=self.kind)
