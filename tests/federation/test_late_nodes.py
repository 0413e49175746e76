"""Nodes that come late take part from the next round, and the hello follows the sample: a
round says hello only to the nodes it sampled (and to replacements for those that fail),
never to every registered node; a node not enrolled is refused by name at its hello
(fedge's apps on Flower's deployment runtime: a real SuperLink, real SuperNodes each with
its own key file, KEK file, agent store and state directory, a key directory exported
exactly as the coordinator exports it, and ``flwr run``)."""

from __future__ import annotations

import json
import subprocess
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.clientapp import ClientApp

from fedge.federation import FederationPlan, load_run_keys, run_rounds
from fedge.federation.client_app import app as deployed_app
from tests.support.flower import (
    BIN,
    deployment,
    export_authority,
    make_site,
    supernode_command,
    write_store,
)
from tests.support.grid import LocalGrid
from tests.support.ports import service

REPO = Path(__file__).resolve().parents[2]
DATA = '{"kind": "generator", "num_sites": 2, "days": 10, "seed": 0}'


class CountingGrid(LocalGrid):
    """A LocalGrid that counts the hello messages (queries) it carries."""

    hellos = 0

    def push_messages(self, messages: Any) -> list[str]:
        batch = list(messages)
        self.hellos += sum(m.metadata.message_type == MessageType.QUERY for m in batch)
        return list(super().push_messages(batch))


def test_the_hello_goes_to_the_sampled_nodes_only_and_failures_are_replaced(
    tmp_path: Path,
) -> None:
    """60 registered nodes, a tenth sampled per round: 50 enrolled, 5 not enrolled and 5
    whose ClientApp fails its hello. Every round still gets its full sample of honest
    nodes, and the hellos sent are those of the sampled nodes and their replacements."""
    pub = tmp_path / "coordinator.pub"
    store = tmp_path / "agent.db"
    write_store(store)
    sites = [make_site(tmp_path / f"s{i}", store=store) for i in range(60)]
    _, directory = export_authority(tmp_path, sites[:55], pub)  # 55..59: never enrolled
    broken = ClientApp()

    @broken.query()
    def fail(msg: Message, context: Context) -> Message:
        raise RuntimeError("the node's keys are not set up yet")

    grid = CountingGrid(deployed_app)
    for node, site in enumerate(sites, start=1):
        grid.add_node(node, site.config(pub), app=broken if 50 <= node - 1 < 55 else None)
    plan = FederationPlan(
        data_spec=DATA, num_rounds=3, local_epochs=0.1, codec="int8", val_days=2, test_days=2,
        fraction_train=0.1, fraction_evaluate=0.1,
    )  # fmt: skip
    outcome = run_rounds(grid, plan, keys=load_run_keys(directory))
    assert outcome.comm is not None
    security = outcome.comm["security"]
    # A tenth of the nodes that may take part (those refused by name no longer may).
    assert outcome.rounds[0].sampled == 6
    assert all(r.sampled in (5, 6) for r in outcome.rounds)
    assert all(r.participants == r.sampled and r.rejected == 0 for r in outcome.rounds)
    refused = sum(security["hello_refused"].values())
    assert set(security["hello_refused"]) <= {"unenrolled"}
    # Each hello bound a node, was refused, or failed (and that node may be asked again).
    failed = grid.hellos - security["nodes_bound"] - refused
    assert failed >= 0 and refused <= 5
    # Three rounds of 6 + 6 sampled nodes: far fewer hellos than the 60 registered.
    assert security["nodes_bound"] <= 36 and grid.hellos < 60


@pytest.mark.slow
def test_a_sealed_run_refuses_a_stranger_and_takes_in_a_supernode_that_starts_late(
    tmp_path: Path,
) -> None:
    """A real SuperLink, two enrolled SuperNodes and one whose (real) key is not enrolled;
    a third enrolled SuperNode starts once round 1 has begun (the round samples its nodes
    as it logs its start, seconds before a node started then is up; the node has two
    rounds' time to come up). The stranger is refused by name at its hello and never
    sampled; the late node is introduced before a later round and its update is accepted
    from then on. The run config also names another data source: no site reads it."""
    store = tmp_path / "store.db"
    write_store(store)
    sites = [make_site(tmp_path / f"site{i}", store=store) for i in range(4)]
    stranger, latecomer = sites[2], sites[3]
    out, evil = tmp_path / "out", tmp_path / "evil"
    with deployment(tmp_path, sites=sites[:3]) as flower, ExitStack() as late:
        enrolled = [sites[0], sites[1], latecomer]
        _, directory = export_authority(tmp_path, enrolled, flower.coordinator_keys)
        overrides = (
            f'num-rounds=3 codec="int8" local-epochs=0.1 output-dir="{out}" '
            f'key-directory="{directory}" '
            f'data-spec=\'{{"kind": "archive", "path": "{evil}"}}\''
        )
        run = subprocess.Popen(
            [str(BIN / "flwr"), "run", str(REPO), "local", "--stream", "--run-config", overrides],
            env=flower.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        lines: list[str] = []
        round_one = threading.Event()

        def read() -> None:
            assert run.stdout is not None
            for line in run.stdout:
                lines.append(line)
                if "[ROUND 1/" in line:
                    round_one.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert round_one.wait(300), "".join(lines)[-3000:]
            node = supernode_command(flower.address, latecomer.node_config(flower.coordinator_keys))
            late.enter_context(service(node, tmp_path / "late-node.log", flower.node_env))
            code = run.wait(timeout=420)
        finally:
            if run.poll() is None:
                run.kill()
        reader.join(10)
    logs = "".join(lines)
    assert code == 0, logs[-3000:]
    assert "[ROUND 3/3]" in logs
    summary = json.loads((out / "run.json").read_text())
    assert summary["security"]["nodes_bound"] == 3
    assert summary["security"]["hello_refused"] == {"unenrolled": 1}
    assert summary["security"]["rejected"] == {}
    rounds = [(r["sampled"], r["participants"]) for r in summary["rounds"]]
    assert all(sampled == accepted for sampled, accepted in rounds), rounds
    accepted = [n for _, n in rounds]
    assert accepted[0] == 2 and accepted[-1] == 3, accepted
    first = accepted.index(3)
    assert all(n == 2 for n in accepted[:first]) and all(n == 3 for n in accepted[first:])
    assert summary["comm"]["codec"] == "int8" and summary["comm"]["compression_ratio"] > 3.5
    with np.load(out / "global_weights.npz") as z:
        arrays = [z[k] for k in z.files]
    assert len(arrays) == 10 and all(np.isfinite(a).all() for a in arrays)
    for site in enrolled:
        assert (site.state_dir / "channel.json").exists()
    assert not (stranger.state_dir / "channel.json").exists()
    assert not evil.exists()
