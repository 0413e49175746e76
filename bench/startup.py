"""Start-up benchmark: ``python -m bench.startup`` -> ``bench/results/startup.json``.

What an operator waits for on a gNB host: the wall-clock time from spawning the ``fedge``
console script to its exit, median of 5 runs after one warm-up run (so the page cache is
warm, as on a host that runs the agent), with the process's CPU time beside it, for

* ``fedge --version`` and ``fedge --help`` (the command table, no sub-command imported);
* ``fedge keys show`` on a real key file and KEK file;
* ``fedge agent check --help`` and a real ``fedge agent check`` against a local Mosquitto
  with an ONNX model configured (store, model, broker probe);
* a ClientApp's start on a training host, cold (as Flower starts it) and warm (forked
  from fedge's SuperExec zygote).

Each command also runs once under ``python -X importtime``; the result lists which of the
heavy packages (torch, pandas, ray, flwr, fastapi, sqlalchemy, SB3) it imported. The
target is 0.5 s for ``fedge keys`` and ``fedge agent``.
"""

from __future__ import annotations

import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import write_result

RUNS = 5
TARGET_S = 0.5
HEAVY = ("torch", "pandas", "ray", "flwr", "fastapi", "sqlalchemy", "stable_baselines3")
MOSQUITTO = Path("/usr/sbin/mosquitto")


def _fedge() -> list[str]:
    """The console script next to this interpreter (what operators run), else ``-m``."""
    script = Path(sys.executable).with_name("fedge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fedge"]


def _env() -> dict[str, str]:
    return {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done


def _heavy_imports(args: list[str]) -> list[str]:
    err = _run([sys.executable, "-X", "importtime", "-m", "fedge", *args]).stderr
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in err.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return sorted(imported & set(HEAVY))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str]) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``RUNS`` runs of ``cmd``, after one warm-up run (page
    cache and .pyc files)."""
    _run(cmd)
    samples, cpu = [], []
    for _ in range(RUNS):
        used = _children_cpu()
        start = time.perf_counter()
        _run(cmd)
        samples.append(time.perf_counter() - start)
        cpu.append(_children_cpu() - used)
    return samples, cpu


def _measure(args: list[str]) -> dict[str, Any]:
    samples, cpu = _timed([*_fedge(), *args])
    return {
        "median_s": round(statistics.median(samples), 3),
        "min_s": round(min(samples), 3),
        "max_s": round(max(samples), 3),
        # user + system CPU of the process: what a loaded, shared machine inflates least
        "cpu_median_s": round(statistics.median(cpu), 3),
        "heavy_imports": _heavy_imports(args),
    }


#: What a ClientApp process imports before it can answer its message.
CLIENTAPP_IMPORTS = "import flwr.supernode.cli, fedge.federation.client_app"


def clientapp_ready() -> None:
    """A warm child's entry: the ClientApp's imports (already in the zygote), then exit."""
    exec(CLIENTAPP_IMPORTS)


def _clientapp_starts() -> dict[str, Any]:
    """A ClientApp's start as Flower makes it (a new interpreter importing Flower and the
    site's app) against one forked from fedge's warm-start zygote (fedge's SuperExec with
    ``clientapp_warm_start``): wall time from the launch until it could answer."""
    from fedge.federation._launch_gate import Zygote

    cold, cold_cpu = _timed([sys.executable, "-c", CLIENTAPP_IMPORTS])
    start = time.perf_counter()
    # as the gate's: Flower's entry point and the site's app
    modules = ["flwr.supernode.cli", "fedge.federation.client_app"]
    zygote = Zygote(modules, entry="bench.startup:clientapp_ready")
    warm = []
    try:
        for i in range(RUNS + 1):
            begun = time.perf_counter()
            child = zygote.spawn(["flwr-clientapp"], quiet=True)
            if child is None:
                raise RuntimeError("the zygote did not start a child")
            while child.poll() is None:
                time.sleep(0.002)
            if child.returncode != 0:
                raise RuntimeError(f"a warm child exited {child.returncode}")
            if i == 0:  # the first waits for the zygote's own imports
                first = time.perf_counter() - start
            else:
                warm.append(time.perf_counter() - begun)
        rollup = dict(
            (line.split(":")[0], int(line.split()[1]))
            for line in Path(f"/proc/{zygote.pid}/smaps_rollup").read_text().splitlines()[1:]
        )
    finally:
        zygote.close()
    return {
        # what the zygote holds while it is up (kB in /proc): all of it, and its own
        "zygote_rss_mb": round(rollup["Rss"] / 1024, 1),
        "zygote_private_mb": round((rollup["Private_Clean"] + rollup["Private_Dirty"]) / 1024, 1),
        "cold_median_s": round(statistics.median(cold), 3),
        "cold_cpu_median_s": round(statistics.median(cold_cpu), 3),
        "warm_median_s": round(statistics.median(warm), 4),
        "warm_max_s": round(max(warm), 4),
        "zygote_ready_s": round(first, 3),
    }


def _tiny_model(path: Path) -> Path:
    """An (untrained) forecaster exported to ONNX: check loads and validates it the same."""
    import torch

    from fedge.models import ForecastSpec, LoadForecaster, export_onnx

    torch.manual_seed(0)
    return export_onnx(LoadForecaster(ForecastSpec(lookback=12, horizon=1)), path)


def main() -> None:
    from bench.agent import agent_config, mosquitto_version, start_broker

    figures: dict[str, Any] = {"runs": RUNS, "target_s": TARGET_S, "command": _fedge()}
    # the machine may be shared: the load around the measurement is part of the result
    figures["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    commands: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fedge-bench-startup-") as tmp:
        work = Path(tmp)
        key, kek = work / "site.key", work / "kek"
        kek.write_bytes(os.urandom(32))
        kek.chmod(0o600)  # the agent refuses a KEK file others can read
        from fedge.security import SiteIdentity

        # what enrollment leaves on the host: the coordinator's public keys
        (work / "coordinator.pub").write_bytes(SiteIdentity.generate().public_keys().to_bytes())
        _run([*_fedge(), "keys", "init", "--key-file", str(key), "--kek-file", str(kek)])
        commands["fedge --version"] = _measure(["--version"])
        commands["fedge --help"] = _measure(["--help"])
        commands["fedge keys show"] = _measure(
            ["keys", "show", "--key-file", str(key), "--kek-file", str(kek)]
        )
        commands["fedge agent check --help"] = _measure(["agent", "check", "--help"])
        if MOSQUITTO.exists():
            broker, port = start_broker(work)
            try:
                cfg = agent_config(work, port, _tiny_model(work / "model.onnx"))
                commands["fedge agent check"] = _measure(["agent", "check", "--config", str(cfg)])
            finally:
                broker.send_signal(signal.SIGTERM)
                broker.wait(30)
            figures["broker"] = mosquitto_version()
        else:
            figures["skipped"] = {"fedge agent check": f"{MOSQUITTO} is not installed"}
    figures["commands"] = commands
    figures["clientapp_start"] = _clientapp_starts()
    figures["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    figures["within_target"] = all(
        v["median_s"] <= TARGET_S
        for k, v in commands.items()
        if k.startswith(("fedge keys", "fedge agent"))
    )
    path = write_result("startup", figures)
    for name, row in commands.items():
        print(f"{name:<28} median {row['median_s']:.3f} s  heavy imports: {row['heavy_imports']}")
    start = figures["clientapp_start"]
    print(
        f"ClientApp start: cold {start['cold_median_s']:.3f} s "
        f"(CPU {start['cold_cpu_median_s']:.3f} s), warm {start['warm_median_s']:.4f} s"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
