"""Deployment benchmark: ``python -m bench.deploy`` -> ``bench/results/deploy.json``.

The gNB agent as one artefact, per candidate (PyInstaller one-dir, shiv zipapp): its size
on disk, and the wall-clock time of ``fedge agent --help``, ``fedge --help`` and a real
``fedge agent check`` (store, ONNX model, keys, a local Mosquitto), each run from a fresh
copy in an empty directory with only ``PATH=/usr/bin:/bin`` and ``HOME``:

* ``first_s``: the very first run of the fresh copy (for shiv, it unpacks into ``~/.shiv``);
* ``cold_s``: median of N runs, each after the artefact's own files (and shiv's unpacked
  tree) are evicted from the page cache (``posix_fadvise(DONTNEED)``), as on a host that
  just booted; the system's libc and the like stay cached, as they would there;
* ``warm_s``: median of N runs with everything cached.

Then the agent's OCI image (deploy/oci/build.py): its layers' size. Targets: the bundle
≤ 120 MB, a cold start ≤ 2 s, the image ≤ 300 MB; the largest files say what dominates.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import RESULTS_DIR, write_result

ROOT = Path(__file__).resolve().parents[1]
RUNS = 7
SIZE_TARGET_MB = 120.0
START_TARGET_S = 2.0
IMAGE_TARGET_MB = 300.0
MOSQUITTO = Path("/usr/sbin/mosquitto")


def _size(path: Path) -> int:
    """Bytes on disk (allocated blocks), of a file or a tree, links not followed."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(
        (Path(d) / f).lstat().st_blocks * 512 for d, _, files in os.walk(path) for f in files
    )


def _evict(*paths: Path) -> None:
    """Drop these files' pages from the page cache (written back first)."""
    for top in paths:
        files = [top] if top.is_file() else [Path(d) / f for d, _, fs in os.walk(top) for f in fs]
        for f in files:
            if f.is_symlink() or not f.is_file():
                continue
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


class Candidate:
    """One artefact copied into an empty host directory, run with a bare environment."""

    def __init__(self, tool: str, built: Path, host: Path) -> None:
        self.tool = tool
        self.host = host
        self.home = host / "home"
        self.home.mkdir(parents=True)
        self.path = host / built.name
        if built.is_dir():
            shutil.copytree(built, self.path, symlinks=True)
            self.command = [str(self.path / "fedge")]
        else:
            shutil.copy2(built, self.path)
            self.command = [str(self.path)]

    def run(self, *args: str) -> float:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.home)}
        start = time.perf_counter()
        done = subprocess.run(
            [*self.command, *args], cwd=self.host, env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        took = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{self.tool} {' '.join(args)}: {done.stderr[-2000:]}")
        return took

    def measure(self, *args: str) -> dict[str, float]:
        cold = []
        for _ in range(RUNS):
            _evict(self.path, self.home)
            cold.append(self.run(*args))
        warm = [self.run(*args) for _ in range(RUNS)]
        return {
            "cold_s": round(statistics.median(cold), 3),
            "cold_max_s": round(max(cold), 3),
            "warm_s": round(statistics.median(warm), 3),
        }


def _largest(tree: Path, count: int = 10) -> list[dict[str, Any]]:
    files = [Path(d) / f for d, _, fs in os.walk(tree) for f in fs]
    sized = sorted(((f.lstat().st_size, f) for f in files), reverse=True)[:count]
    return [{"file": str(f.relative_to(tree)), "mb": round(s / 1e6, 1)} for s, f in sized]


def _site(work: Path) -> tuple[Path, Any, int]:
    """A real agent.toml with keys and an ONNX model, and a broker for its check."""
    from bench.agent import agent_config, start_broker
    from bench.startup import _tiny_model
    from fedge.security import SiteIdentity, save_identity

    kek = os.urandom(32).hex().encode()
    (work / "kek").write_bytes(kek)
    (work / "kek").chmod(0o600)
    save_identity(work / "site.key", SiteIdentity.generate(), kek)
    (work / "coordinator.pub").write_bytes(SiteIdentity.generate().public_keys().to_bytes())
    broker, port = start_broker(work)
    return agent_config(work, port, _tiny_model(work / "model.onnx")), broker, port


def main() -> None:
    bundle = runpy.run_path(str(ROOT / "deploy" / "bundle" / "build.py"))
    figures: dict[str, Any] = {
        "runs": RUNS,
        "targets": {
            "bundle_mb": SIZE_TARGET_MB,
            "cold_start_s": START_TARGET_S,
            "image_mb": IMAGE_TARGET_MB,
        },
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    candidates: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fedge-bench-deploy-") as tmp:
        work = Path(tmp)
        if not MOSQUITTO.exists():
            raise SystemExit(f"{MOSQUITTO} is not installed (deploy/system-deps.sh)")
        cfg, broker, _ = _site(work)
        try:
            for tool in bundle["TOOLS"]:
                start = time.perf_counter()
                built = Path(bundle["build"](tool))
                build_s = time.perf_counter() - start
                c = Candidate(tool, built, work / tool)
                first = c.run("agent", "--help")
                row: dict[str, Any] = {
                    "artefact": built.name,
                    "build_s": round(build_s, 1),  # a few seconds when the cache had it
                    "size_mb": round(_size(c.path) / 1e6, 1),  # MB = 10^6 bytes, on disk
                    "first_start_s": round(first, 3),
                    "agent --help": c.measure("agent", "--help"),
                    "--help": c.measure("--help"),
                    "agent check": c.measure("agent", "check", "--config", str(cfg)),
                }
                if tool == "shiv":
                    # what the zipapp unpacks on first run: the disk it really takes
                    row["unpacked_mb"] = round(_size(c.home / ".shiv") / 1e6, 1)
                    row["on_disk_mb"] = round(row["size_mb"] + row["unpacked_mb"], 1)
                    row["needs"] = "a Python 3.11 on the host (Debian 12: python3)"
                else:
                    row["on_disk_mb"] = row["size_mb"]
                    row["largest_files"] = _largest(c.path)
                    row["needs"] = "glibc 2.36 or newer (built on Debian 12)"
                candidates[tool] = row
        finally:
            broker.send_signal(signal.SIGTERM)
            broker.wait(30)
    figures["candidates"] = candidates
    oci = runpy.run_path(str(ROOT / "deploy" / "oci" / "build.py"))
    if shutil.which("buildah") is not None and os.geteuid() == 0:
        tag = oci["build_agent_image"]()
        figures["image"] = {"tag": tag, "size_mb": round(oci["image_size"](tag) / 1e6, 1)}
    else:
        figures["image"] = {"skipped": "buildah is missing or this is not root"}
    chosen = candidates["pyinstaller"]
    figures["chosen"] = "pyinstaller"
    figures["within_target"] = {
        "bundle_mb": chosen["on_disk_mb"] <= SIZE_TARGET_MB,
        "cold_start_s": max(chosen[k]["cold_s"] for k in ("agent --help", "agent check"))
        <= START_TARGET_S,
        "image_mb": figures["image"].get("size_mb", float("inf")) <= IMAGE_TARGET_MB,
    }
    figures["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    previous = RESULTS_DIR / "deploy.json"  # bench/failover.py's key is its own
    if previous.exists() and "failover" in (old := json.loads(previous.read_text())):
        figures["failover"] = old["failover"]
    path = write_result("deploy", figures)
    for tool, row in candidates.items():
        print(
            f"{tool:<12} {row['on_disk_mb']:>6.1f} MB on disk  first {row['first_start_s']:.2f} s"
            f"  agent --help cold {row['agent --help']['cold_s']:.2f} s"
            f"  agent check cold {row['agent check']['cold_s']:.2f} s"
            f" warm {row['agent check']['warm_s']:.2f} s"
        )
    print(f"image {figures['image']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
