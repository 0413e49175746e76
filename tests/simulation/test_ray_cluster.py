"""``fedge simulate --ray-address``: the federated method runs on a real two-node Ray
cluster started here (``ray start --head`` and a second ``ray start --address``, every port
free and on loopback), with its ClientApps spread over both nodes, and gives the figures
of the single-machine backend on the same seed. A bad or dead address is refused before
anything runs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from fedge.simulation._config import preset, probe_ray, ray_endpoint
from fedge.simulation._errors import SimulationError
from fedge.simulation._run import run
from tests.support.ports import free_port
from tests.support.ray_cluster import (
    BIN,
    ENV,
    ClusterError,
    cluster_pids,
    ray_available,
    two_node_cluster,
)

SMALL = ["--preset", "smoke", "--methods", "fedavg", "--rounds", "2", "--seed", "3"]


@pytest.mark.parametrize(
    "address", ["", "auto", "ray://127.0.0.1:6379", "127.0.0.1", "127.0.0.1:0", "h:70000", "a b:1"]
)
def test_a_bad_cluster_address_is_refused(address: str) -> None:
    with pytest.raises(SimulationError, match="--ray-address"):
        ray_endpoint(address)


def test_good_cluster_addresses_parse() -> None:
    assert ray_endpoint("10.0.0.7:6379") == ("10.0.0.7", 6379)
    assert ray_endpoint("head.ran.example:6380") == ("head.ran.example", 6380)
    assert ray_endpoint("[::1]:6379") == ("::1", 6379)


def _simulate(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "fedge"), "simulate", *SMALL, "--runs-dir", str(cwd / "runs"), *args],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_a_dead_cluster_address_is_refused_before_anything_runs(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(SimulationError, match=f"no Ray cluster answers at {dead}"):
        probe_ray(dead)
    config = replace(preset("smoke"), name="dead", ray_address=dead)
    with pytest.raises(SimulationError, match="no Ray cluster answers"):
        run(config, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()  # refused before the run directory


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, Path]]:
    if not ray_available():
        pytest.skip("ray is not installed (the sim extra has it)")
    with two_node_cluster() as started:
        yield started


def test_a_cluster_without_cpus_is_refused_before_ray_starts() -> None:
    with pytest.raises(ClusterError, match="at least one CPU"), two_node_cluster(cpus=0):
        pass


def test_the_cluster_is_found_by_its_whole_address_only() -> None:
    """Another cluster's head on a longer port (or a longer directory name) is not ours."""
    sleeper = subprocess.Popen(
        [str(BIN / "python"), "-c", "import time; time.sleep(60)", "127.0.0.1:12345", "/tmp/r-x"]
    )
    try:
        assert sleeper.pid not in cluster_pids("127.0.0.1:1234", Path("/tmp/r"))
        assert sleeper.pid in cluster_pids("127.0.0.1:12345", Path("/tmp/none"))
        assert sleeper.pid in cluster_pids("127.0.0.1:1", Path("/tmp/r-x"))
    finally:
        sleeper.kill()
        sleeper.wait()


def _actors(root: Path) -> set[Path]:
    """The worker logs of the cluster's ClientApp actors."""
    return {
        log.resolve()  # session_latest links to the session itself
        for log in root.glob("session_*/logs/worker-*.out")
        if ":actor_name:ClientAppActor" in log.read_text(errors="replace")
    }


def _rmse(run_dir: Path) -> float:
    report = json.loads((run_dir / "report.json").read_text())
    return float(report["forecast"]["methods"]["fedavg"]["rmse"])


@pytest.mark.slow
def test_the_run_spreads_over_both_nodes_and_matches_the_local_backend(
    cluster: tuple[str, Path], tmp_path: Path
) -> None:
    address, root = cluster
    on_cluster = _simulate("--ray-address", address, "--name", "cluster", cwd=tmp_path)
    assert on_cluster.returncode == 0, on_cluster.stderr[-3000:]
    # one CPU per node and one CPU per ClientApp actor: two actors means both nodes
    actors = _actors(root)
    assert len(actors) == 2, actors
    report = json.loads((tmp_path / "runs" / "cluster" / "report.json").read_text())
    assert report["config"]["ray_address"] == address
    local = _simulate("--name", "local", "--workers", "2", cwd=tmp_path)
    assert local.returncode == 0, local.stderr[-3000:]
    assert _actors(root) == actors  # without --ray-address the host's cluster is not used
    cluster_rmse, local_rmse = (
        _rmse(tmp_path / "runs" / "cluster"),
        _rmse(tmp_path / "runs" / "local"),
    )
    assert abs(cluster_rmse - local_rmse) <= 0.02 * local_rmse, (cluster_rmse, local_rmse)
