"""The real ``fedge agent`` process: what it imports, how it fails, ``check`` and SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.edge_agent.conftest import Client, Models, Mosquitto, agent_env, write_config

FORBIDDEN = ("torch", "ray", "fastapi", "flwr", "pandas", "sqlalchemy", "stable_baselines3")


def imported_modules(stderr: str) -> set[str]:
    """The full names of the modules a ``python -X importtime`` run imported."""
    return {
        line.split("|")[-1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def top_level(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_the_agent_process_never_imports_torch_ray_fastapi_flwr(
    tmp_path: Path, broker: Mosquitto, client: Client, tiny_models: Models
) -> None:
    cfg = write_config(
        tmp_path,
        broker.url,
        model={"initial": str(tiny_models.good)},
        metrics={"enabled": True, "port": 0},
    )
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "fedge", "agent", "run", "--config", str(cfg)],
        stderr=subprocess.PIPE, env=agent_env(), text=True,
    )  # fmt: skip
    try:
        while (status := client.get("status", timeout=60))["pid"] != proc.pid:
            pass
        assert status["state"] == "online" and status["model_version"].startswith("initial-")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    imported = top_level(imported_modules(err))
    assert {"onnxruntime", "paho", "numpy", "prometheus_client"} <= imported
    assert not imported & set(FORBIDDEN), imported & set(FORBIDDEN)
    assert client.get("status")["state"] == "offline"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedge", "agent", *args],
        capture_output=True, text=True, env=agent_env(), timeout=60, check=False,
    )  # fmt: skip


def test_check_reports_each_part_and_fails_with_exit_2(
    tmp_path: Path, broker: Mosquitto, tiny_models: Models
) -> None:
    cfg = write_config(tmp_path, broker.url, model={"initial": str(tiny_models.good)})
    ok = run_cli("check", "--config", str(cfg))
    assert ok.returncode == 0, ok.stderr
    assert "ok    store and model" in ok.stdout and "initial-" in ok.stdout
    assert f"127.0.0.1:{broker.port} accepted MQTT 5" in ok.stdout
    v3 = write_config(tmp_path, broker.url, broker={"protocol": "3.1.1"})
    assert "accepted MQTT 3.1.1" in run_cli("check", "--config", str(v3)).stdout
    broker.stop()
    down = run_cli("check", "--config", str(cfg))
    assert down.returncode == 2
    assert "FAIL  broker: cannot reach broker" in down.stdout
    assert "error: agent check failed: broker" in down.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[agent]\nsite = "x y"\n')
    res = run_cli("check", "--config", str(bad))
    assert res.returncode == 2 and "agent.site" in res.stderr
    assert "Traceback" not in res.stderr


def test_rollback_without_history_and_bad_keys_exit_2(tmp_path: Path, broker: Mosquitto) -> None:
    cfg = write_config(tmp_path, broker.url)
    res = run_cli("rollback", "--config", str(cfg))
    assert res.returncode == 2 and "no model is serving" in res.stderr
    (tmp_path / "coord.pub").write_bytes(b"short")
    keyed = write_config(
        tmp_path,
        broker.url,
        security={
            "key_file": str(tmp_path / "missing.key"),
            "coordinator_keys": str(tmp_path / "coord.pub"),
        },
    )
    res = run_cli("run", "--config", str(keyed))
    assert res.returncode == 2 and "security:" in res.stderr
    assert "Traceback" not in res.stderr


def test_fedge_keys_imports_only_what_keys_need(tmp_path: Path) -> None:
    key, kek = tmp_path / "site.key", tmp_path / "kek"
    kek.write_bytes(b"k" * 32)
    for verb in ("init", "show"):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "fedge", "keys", verb,
             "--key-file", str(key), "--kek-file", str(kek)],
            capture_output=True, text=True, env=agent_env(), timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        modules = imported_modules(done.stderr)
        assert "cryptography" in top_level(modules)
        assert not top_level(modules) & {*FORBIDDEN, "onnxruntime", "paho", "numpy"}
        ours = {m.split(".")[1] for m in modules if m.startswith("fedge.")}
        assert ours <= {"_cli", "_errors", "security"}, ours


def test_check_without_onnx_runtime_names_the_agent_extra(
    tmp_path: Path, tiny_models: Models
) -> None:
    """ONNX Runtime loads with the model, when ``check`` runs, not when the command loads."""
    cfg = write_config(tmp_path, "mqtt://127.0.0.1:1", model={"initial": str(tiny_models.good)})
    code = (
        "import sys; sys.modules['onnxruntime'] = None;"
        f"sys.argv = ['fedge', 'agent', 'check', '--config', {str(cfg)!r}];"
        "from fedge._cli import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=agent_env(),
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "error: fedge agent needs the module 'onnxruntime', which this install lacks: "
        "pip install 'fedge[agent]'"
    )
    assert "Traceback" not in done.stderr
