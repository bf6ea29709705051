"""Measure the wall time of `eimsdk --help` and `eimsdk plugins` (target: under 0.5 s each).

Run: python benchmarks/cli_startup.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def measure(args: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "eimsdk", *args], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    repeat = parser.parse_args().repeat
    print("| command | median s | max s |\n|---|---|---|")
    for args in (["--help"], ["plugins"], ["plugins", "--json"]):
        t = measure(args, repeat)
        print(f"| eimsdk {' '.join(args)} | {statistics.median(t):.3f} | {max(t):.3f} |")


if __name__ == "__main__":
    main()
