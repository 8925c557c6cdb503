"""Start time of the local Chef server: PostgreSQL (first start, restart) against --memory.

Each figure is the median of ``--runs`` starts, from the call to
``LocalChefServer.start()`` until an authenticated request succeeded.

    python bench/local_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from barclamp_sdk.local import LocalChefServer


def timed_start(server: LocalChefServer) -> float:
    began = time.monotonic()
    server.start()
    elapsed = time.monotonic() - began
    server.stop()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {"postgresql, first start (initdb, schema)": [],
                                       "postgresql, restart": [], "memory": []}
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            server = LocalChefServer(Path(tmp) / "pg")
            figures["postgresql, first start (initdb, schema)"].append(timed_start(server))
            figures["postgresql, restart"].append(timed_start(server))
            figures["memory"].append(timed_start(LocalChefServer(Path(tmp) / "mem", memory=True)))
    for name, values in figures.items():
        print(f"{name}: median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
