"""Deployed keys, end to end in one process: the real deployed ClientApp on every node
(identity from its key file, the coordinator's keys from enrollment, its own store and
state directory), the real round loop and sealed strategy, Flower's protobuf on the wire.

What an attacker could do against seed-derived keys must fail here: pose as an enrolled
site, make a site hand over its update in clear, or open what it captured."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.clientapp import ClientApp

from fedge.federation import (
    FederationError,
    FederationPlan,
    ServerKeys,
    load_run_keys,
    node_setup,
    run_rounds,
)
from fedge.federation._channel import TRAIN, ServerChannel
from fedge.federation._codec import downlink_spec, encode
from fedge.federation._hello import HELLO, answer_hello, hello_message, verify_answer
from fedge.federation._rounds import initial_weights
from fedge.federation._site_mod import SEALED
from fedge.federation._update import frame
from fedge.federation.client_app import app as deployed_app
from fedge.federation.server_app import deployed_plan
from fedge.security import (
    KeyDirectory,
    OneShotOpener,
    SecurityError,
    SiteIdentity,
    SiteRecord,
    SiteStatus,
)
from fedge.simulation._identities import simulated_identity
from tests.support.flower import SiteFiles, export_authority, make_site, write_store
from tests.support.grid import LocalGrid

DATA = '{"kind": "generator", "num_sites": 2, "days": 10, "seed": 0}'


def _plan(**kw: Any) -> FederationPlan:
    base = FederationPlan(
        data_spec=DATA, num_rounds=1, local_epochs=0.1, codec="int8", val_days=2, test_days=2
    )
    return replace(base, **kw)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "agent.db"
    write_store(path, days=10)
    return path


def _sites(root: Path, store: Path, n: int) -> list[SiteFiles]:
    return [make_site(root / f"site{i}", store=store) for i in range(n)]


def _grid(sites: list[SiteFiles], pub: Path, first: int = 1) -> LocalGrid:
    grid = LocalGrid(deployed_app)
    for i, site in enumerate(sites):
        grid.add_node(first + i, site.config(pub))
    return grid


def test_every_node_is_introduced_as_it_appears_and_every_honest_update_accepted(
    tmp_path: Path, store: Path
) -> None:
    """Three nodes when the run starts, 27 more after the first hello: every sampled node is
    bound before it is sent a model, only sampled nodes are asked for a hello, and every
    sampled honest update is accepted."""
    pub = tmp_path / "coordinator.pub"
    sites = _sites(tmp_path, store, 30)
    _, directory = export_authority(tmp_path, sites, pub)
    grid = _grid(sites[:3], pub)

    def late_nodes(g: LocalGrid) -> None:
        if g.sent == 1:  # right after the first hello burst
            for i, site in enumerate(sites[3:], start=4):
                g.add_node(i, site.config(pub))

    grid.after_send = late_nodes
    plan = _plan(num_rounds=3, fraction_train=0.5, fraction_evaluate=0.1)
    outcome = run_rounds(grid, plan, keys=load_run_keys(directory))
    assert outcome.comm is not None
    security = outcome.comm["security"]
    assert 15 <= security["nodes_bound"] < 30 and security["hello_refused"] == {}
    assert security["rejected"] == {}
    rounds = outcome.comm["comm"]["per_round"]
    assert [r["sampled"] for r in rounds] == [1, 15, 15]  # half of the bound nodes
    assert all(r["accepted"] == r["sampled"] and r["rejected"] == 0 for r in rounds)
    assert [r.participants for r in outcome.rounds] == [1, 15, 15]
    assert all(np.isfinite(w).all() for w in outcome.weights)
    # Each site's channel state is in its own configured directory; every bound node was
    # sampled and sent a sealed model, and no other.
    assert sum((s.state_dir / "channel.json").exists() for s in sites) == security["nodes_bound"]


def test_an_unenrolled_node_is_refused_by_name_and_the_round_finishes(
    tmp_path: Path, store: Path
) -> None:
    pub = tmp_path / "coordinator.pub"
    enrolled = _sites(tmp_path, store, 2)
    stranger = make_site(tmp_path / "stranger", store=store)  # a real key, never enrolled
    _, directory = export_authority(tmp_path, enrolled, pub)
    grid = _grid([*enrolled, stranger], pub)
    outcome = run_rounds(grid, _plan(num_rounds=2), keys=load_run_keys(directory))
    assert outcome.comm is not None
    assert outcome.comm["security"]["hello_refused"] == {"unenrolled": 1}
    assert [(r.sampled, r.participants, r.rejected) for r in outcome.rounds] == [(2, 2, 0)] * 2
    assert not (stranger.state_dir / "channel.json").exists()  # it never got a model


def test_a_node_posing_as_an_enrolled_site_with_inflated_examples_is_not_accepted(
    tmp_path: Path, store: Path
) -> None:
    """The attacker claims ``site-index=3`` in its node config, and replays site 3's signed
    hello answer it captured from the wire; neither binds it to site 3."""
    pub = tmp_path / "coordinator.pub"
    sites = _sites(tmp_path, store, 4)
    authority, directory = export_authority(tmp_path, sites, pub)
    keys = load_run_keys(directory)
    channel = ServerChannel(keys.identity, keys.directory)

    # The honest hello of site 3 (node 4), as captured on the wire.
    content, challenge = hello_message(authority, 4242, 4)
    ask = Message(content, dst_node_id=4, message_type=MessageType.QUERY)
    honest = LocalGrid(deployed_app)
    honest.add_node(4, sites[3].config(pub))
    captured = honest.deliver(ask)
    assert verify_answer(captured, challenge, authority.site_id, keys.directory) == (
        sites[3].identity.site_id
    )

    attacker = ClientApp()

    @attacker.query()
    def replay(msg: Message, context: Context) -> Message:
        return Message(RecordDict({HELLO: captured.content.config_records[HELLO]}), reply_to=msg)

    @attacker.train()
    def inflate(msg: Message, context: Context) -> Message:
        metrics = MetricRecord({"num-examples": 10**9, "train_loss": 0.0})
        return Message(
            RecordDict({"arrays": msg.content.array_records["arrays"], "metrics": metrics}),
            reply_to=msg,
        )

    grid = _grid(sites[:3], pub)
    own_key = make_site(tmp_path / "poser", store=store)
    grid.add_node(66, {**own_key.config(pub), "site-index": 3})  # its own key, site 3's index
    grid.add_node(77, {"site-index": 3}, app=attacker)  # replays site 3's answer
    outcome = run_rounds(grid, _plan(), keys=keys)
    assert outcome.comm is not None
    assert outcome.comm["security"]["hello_refused"] == {"bad_hello": 1, "unenrolled": 1}
    assert outcome.rounds[0].sampled == 3 and outcome.rounds[0].participants == 3
    assert not channel.knows(77)


def test_a_rogue_server_cannot_make_a_site_hand_over_its_update_in_clear(
    tmp_path: Path, store: Path
) -> None:
    pub = tmp_path / "coordinator.pub"
    (site,) = _sites(tmp_path, store, 1)
    export_authority(tmp_path, [site], pub)
    rogue = SiteIdentity.generate()  # not the enrolled coordinator
    grid = _grid([site], pub)
    plan = _plan()
    weights = ArrayRecord.from_numpy_ndarrays(initial_weights(plan))
    config = ConfigRecord({**plan.to_config(), "server-round": 1})

    # 1. A plain, unsealed train message: refused, nothing of the update comes back.
    plain = Message(
        RecordDict({"arrays": weights, "config": config}), dst_node_id=1,
        message_type=MessageType.TRAIN,
    )  # fmt: skip
    reply = grid.deliver(plain)
    assert reply.has_error() and "unsealed" in str(reply.error.reason)
    assert not reply.content.array_records if not reply.has_error() else True

    # 2. A hello signed by the rogue's key: the site does not answer it.
    content, _ = hello_message(rogue, 4242, 1)
    reply = grid.deliver(Message(content, dst_node_id=1, message_type=MessageType.QUERY))
    assert reply.has_error() and "not the enrolled coordinator" in str(reply.error.reason)

    # 3. A sealed first contact from the rogue (its own keys, the site's real public keys).
    rogue_directory = KeyDirectory()
    rogue_directory.register(site.identity.public_keys())
    rogue_channel = ServerChannel(rogue, rogue_directory)
    rogue_channel.bind(1, site.identity.site_id)
    payload = frame({"codec": "fp32"}, encode(initial_weights(plan), downlink_spec("fp32")))
    fields = rogue_channel.seal_down(1, 1, TRAIN, payload)
    sealed = Message(
        RecordDict({"config": config, SEALED: ConfigRecord({**fields, "sim-key-seed": 0})}),
        dst_node_id=1, message_type=MessageType.TRAIN,
    )  # fmt: skip
    reply = grid.deliver(sealed)
    assert reply.has_error()
    assert not (site.state_dir / "channel.json").exists()


def test_a_passive_observer_with_every_message_and_the_run_config_opens_nothing(
    tmp_path: Path, store: Path
) -> None:
    pub = tmp_path / "coordinator.pub"
    sites = _sites(tmp_path, store, 2)
    _, directory = export_authority(tmp_path, sites, pub)
    grid = _grid(sites, pub)
    plan = _plan(num_rounds=2, downlink_codec="fp32")
    run_rounds(grid, plan, keys=load_run_keys(directory))
    wire = grid.wire.everything()
    # The global model as sent, framed but unsealed: none of it is on the wire.
    clear = encode(initial_weights(plan), downlink_spec("fp32"))
    assert len(clear) > 100_000
    chunks = [clear[i : i + 64] for i in range(1000, len(clear) - 64, len(clear) // 50)]
    assert not any(c in wire for c in chunks)
    # Every first-contact envelope refuses whoever the observer can be: a fresh identity,
    # or the identity a seed in the run config would derive.
    from flwr.common.serde import message_from_proto
    from flwr.proto.message_pb2 import Message as ProtoMessage

    oneshots = []
    for blob in grid.wire.down:
        proto = ProtoMessage()
        proto.ParseFromString(blob)
        record = message_from_proto(proto).content.config_records.get(SEALED)
        if record is not None and "oneshot" in record:
            oneshots.append(record["oneshot"])
    assert len(oneshots) == 2
    coordinator = KeyDirectory()
    coordinator.register(load_run_keys(directory).identity.public_keys())
    for guess in (SiteIdentity.generate(), simulated_identity(plan.seed, "site-0")):
        for env in oneshots:
            with pytest.raises(SecurityError):
                OneShotOpener(guess, coordinator).open(env)  # type: ignore[arg-type]
    assert b"key-file" not in wire and str(sites[0].kek_file).encode() not in wire


def test_server_sent_paths_and_attacks_are_ignored(tmp_path: Path, store: Path) -> None:
    """Whatever the server's messages say about state-dir, data-spec or attacks, the site
    reads and writes only its own configured directories and trains on its own store."""
    pub = tmp_path / "coordinator.pub"
    (site,) = _sites(tmp_path, store, 1)
    _, directory = export_authority(tmp_path, [site], pub)
    evil = tmp_path / "evil"
    grid = _grid([site], pub)
    deliver = grid.deliver

    def meddle(msg: Message) -> Message:
        for record in msg.content.config_records.values():
            record["state-dir"] = str(evil)
            record["attacks"] = json.dumps({"tampered": 1.0, "num_sites": 1})
            record["data-spec"] = json.dumps({"kind": "archive", "path": str(evil / "data")})
            record["sim-key-seed"] = 7
        return deliver(msg)

    grid.deliver = meddle  # type: ignore[method-assign]
    outcome = run_rounds(grid, _plan(num_rounds=2), keys=load_run_keys(directory))
    assert [r.participants for r in outcome.rounds] == [1, 1]  # no tampering happened
    assert not evil.exists()
    assert (site.state_dir / "channel.json").exists()
    allowed = {"channel.json", "estimate.npz", "oneshot-replay.json"}
    assert {p.name for p in site.state_dir.iterdir()} <= allowed


def test_node_config_is_checked(tmp_path: Path, store: Path) -> None:
    pub = tmp_path / "coordinator.pub"
    (site,) = _sites(tmp_path, store, 1)
    export_authority(tmp_path, [site], pub)
    good = site.config(pub)
    assert node_setup(good).identity.site_id == site.identity.site_id
    for key in ("key-file", "coordinator-keys", "state-dir", "store"):
        with pytest.raises(FederationError, match=key):
            node_setup({k: v for k, v in good.items() if k != key})
    with pytest.raises(FederationError, match="absolute"):
        node_setup({**good, "state-dir": "relative/dir"})
    # An older agent's cell-index binds nothing and chooses nothing: ignored.
    assert node_setup({**good, "cell-index": "one"}) == node_setup(good)
    loose = tmp_path / "loose.kek"
    loose.write_bytes(site.kek_file.read_bytes())
    loose.chmod(0o644)
    with pytest.raises(FederationError, match="readable by others"):
        node_setup({**good, "kek-file": str(loose)})
    wrong = tmp_path / "wrong.kek"
    wrong.write_bytes(b"another-kek-entirely")
    wrong.chmod(0o600)
    with pytest.raises(FederationError, match="wrong key-encryption key"):
        node_setup({**good, "kek-file": str(wrong)})
    bad_pub = tmp_path / "bad.pub"
    bad_pub.write_bytes(b"short")
    with pytest.raises(FederationError, match="coordinator keys"):
        node_setup({**good, "coordinator-keys": str(bad_pub)})
    env_config = {k: v for k, v in good.items() if k != "kek-file"}
    with pytest.raises(FederationError, match="FEDGE_TEST_KEK"):
        node_setup({**env_config, "kek-env": "FEDGE_TEST_KEK"})
    os.environ["FEDGE_TEST_KEK"] = site.kek_file.read_text()
    try:
        assert node_setup({**env_config, "kek-env": "FEDGE_TEST_KEK"}).store == site.store
    finally:
        del os.environ["FEDGE_TEST_KEK"]


def test_key_directory_is_checked(tmp_path: Path, store: Path) -> None:
    pub = tmp_path / "coordinator.pub"
    sites = _sites(tmp_path, store, 2)
    authority, directory = export_authority(tmp_path, sites, pub)
    keys = load_run_keys(directory)
    assert keys.identity.site_id == authority.site_id
    assert keys.directory.keys(sites[1].identity.site_id) == sites[1].identity.public_keys()
    body = json.loads(directory.read_text())
    body["sites"][0]["site_id"] = body["sites"][1]["site_id"]
    forged = tmp_path / "run-keys" / "forged.json"
    forged.write_text(json.dumps(body))
    with pytest.raises(FederationError, match="does not match"):
        load_run_keys(forged)
    (tmp_path / "run-keys" / "server.kek").chmod(0o644)
    with pytest.raises(FederationError, match="readable by others"):
        load_run_keys(directory)
    (tmp_path / "run-keys" / "server.kek").chmod(0o600)
    with pytest.raises(FederationError, match="not JSON"):
        (tmp_path / "run-keys" / "x.json").write_text("{")
        load_run_keys(tmp_path / "run-keys" / "x.json")
    with pytest.raises(FederationError, match="version"):
        (tmp_path / "run-keys" / "y.json").write_text('{"version": 9}')
        load_run_keys(tmp_path / "run-keys" / "y.json")


def test_a_revoked_site_and_a_replayed_hello_are_refused(tmp_path: Path, store: Path) -> None:
    pub = tmp_path / "coordinator.pub"
    (site,) = _sites(tmp_path, store, 1)
    authority, directory = export_authority(tmp_path, [site], pub)
    keys = load_run_keys(directory)
    grid = _grid([site], pub)
    content, challenge = hello_message(authority, 4242, 1)
    answer = grid.deliver(Message(content, dst_node_id=1, message_type=MessageType.QUERY))
    assert verify_answer(answer, challenge, authority.site_id, keys.directory)
    for other in (
        replace(challenge, nonce=os.urandom(32)),  # an answer to an earlier hello
        replace(challenge, run_id=1),  # from another run
    ):
        with pytest.raises(FederationError) as exc:
            verify_answer(answer, other, authority.site_id, keys.directory)
        assert getattr(exc.value, "reason", "") == "bad_hello"
    keys.directory.revoke(site.identity.site_id)
    with pytest.raises(FederationError) as exc:
        verify_answer(answer, challenge, authority.site_id, keys.directory)
    assert getattr(exc.value, "reason", "") == "revoked"
    with pytest.raises(FederationError, match="malformed"):
        bad = Message(RecordDict({HELLO: ConfigRecord({"nonce": b"x"})}), dst_node_id=1,
                      message_type=MessageType.QUERY)  # fmt: skip
        answer_hello(bad, 4242, 1, site.identity, authority.public_keys())


def test_a_deployed_plan_is_sealed_and_refuses_simulation_settings() -> None:
    config = _plan().to_config()
    assert deployed_plan({**config, "codec": "none"}).codec == "fp32"
    for key, value in (("attacks", '{"tampered": 1.0}'), ("state-dir", "/tmp/x")):
        with pytest.raises(FederationError, match="simulation settings"):
            deployed_plan({**config, key: value})
    assert "attacks" not in config and "state-dir" not in config  # never sent to sites
    with pytest.raises(FederationError, match="needs the server's keys"):
        run_rounds(LocalGrid(deployed_app), _plan())


def test_server_keys_accept_only_the_directory_given() -> None:
    """A ServerKeys built in-process (the simulation's) holds exactly what it was given."""
    site = SiteIdentity.generate()
    directory = KeyDirectory()
    directory.registry.put_site(SiteRecord(site.public_keys(), SiteStatus.ACTIVE, 0.0))
    keys = ServerKeys(SiteIdentity.generate(), directory)
    assert keys.directory.keys(site.site_id) == site.public_keys()
    with pytest.raises(SecurityError):
        keys.directory.keys(SiteIdentity.generate().site_id)
