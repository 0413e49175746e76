"""A stand-in ClientApp entry point for the warm-start zygote's tests: it records where it
was imported and where it ran, in the file ``$WARM_PROBE_LOG`` names."""

from __future__ import annotations

import os
import sys
import time


def _record(line: str) -> None:
    with open(os.environ["WARM_PROBE_LOG"], "a") as handle:
        handle.write(line + "\n")


_record(f"imported {os.getpid()}")


def main() -> None:
    """``probe CODE [SECONDS ...]``: say hello on stdout, record the run, exit with CODE."""
    print("probe says hello", flush=True)
    _record(f"ran {os.getpid()} {os.getppid()} {' '.join(sys.argv)}")
    if len(sys.argv) > 2:
        time.sleep(float(sys.argv[2]))
    sys.exit(int(sys.argv[1]))
