"""The sealed per-run channel with real post-quantum crypto: first contact, later rounds, attacks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fedge.federation import FederationError, UpdateRejectedError
from fedge.federation._channel import (
    EVALUATE,
    TRAIN,
    ServerChannel,
    SiteChannel,
)
from fedge.federation._update import frame, unframe
from fedge.security import ContentType, KeyDirectory, ReplayDetected
from fedge.simulation._adversary import AdversaryPlan, tamper
from fedge.simulation._identities import simulated_identity

SEED = 11


def _pair(tmp_path: Path) -> tuple[ServerChannel, Callable[[], SiteChannel]]:
    directory = KeyDirectory()
    site = simulated_identity(SEED, "site-0")
    directory.register(site.public_keys())
    server = ServerChannel(simulated_identity(SEED, "server"), directory)
    server.bind(42, site.site_id)
    return server, lambda: SiteChannel(site, server.identity.public_keys(), tmp_path / "site-0")


def _exchange(
    server: ServerChannel,
    site_channel: SiteChannel,
    rnd: int,
    kind: int = TRAIN,
    body: bytes = b"update",
) -> dict[str, bytes]:
    down = server.seal_down(42, rnd, kind, frame({"codec": "int8"}, b"global"))
    control, payload = unframe(site_channel.open_down(rnd, kind, down))
    assert (control, payload) == ({"codec": "int8"}, b"global")
    return site_channel.seal_up(rnd, kind, body, ContentType.MODEL_UPDATE)


def test_identities_are_a_function_of_seed_and_name() -> None:
    """Derived afresh (past the cache), the same seed and name give the same keys, so every
    worker of a run agrees on them; another seed or name gives others."""
    derive = simulated_identity.__wrapped__
    a, b = derive(1, "site-3"), derive(1, "site-3")
    assert a is not b and a.public_keys() == b.public_keys()
    assert a.signing_key.private_bytes() == b.signing_key.private_bytes()
    assert a.kem_key.seed_bytes() == b.kem_key.seed_bytes()
    others = [derive(2, "site-3"), derive(1, "site-4")]
    assert len({a.site_id, *(o.site_id for o in others)}) == 3
    assert len({a.kem_key.public_bytes(), *(o.kem_key.public_bytes() for o in others)}) == 3


def test_a_replayed_first_contact_is_refused_by_a_new_site_process(tmp_path: Path) -> None:
    """Each message is handled by a fresh SiteChannel (any worker, any restart), so what
    it has opened must come from disk, not from the object."""
    server, new_site = _pair(tmp_path)
    down = server.seal_down(42, 1, TRAIN, frame({"codec": "int8"}, b"global"))
    new_site().open_down(1, TRAIN, down)
    with pytest.raises(ReplayDetected):
        new_site().open_down(1, TRAIN, down)


def test_first_contact_then_session_envelopes_across_processes(tmp_path: Path) -> None:
    server, new_site = _pair(tmp_path)
    up = _exchange(server, new_site(), 1)
    assert set(up) == {"resp", "secret", "env"}
    assert server.open_up(42, 1, TRAIN, up) == b"update"
    # Round 2 in a "different worker": a fresh SiteChannel object reads the state from disk.
    up2 = _exchange(server, new_site(), 2, body=b"second")
    assert set(up2) == {"env"}
    assert len(up2["env"]) == len(b"second") + 40  # session overhead only
    assert server.open_up(42, 2, TRAIN, up2) == b"second"
    ev = _exchange(server, new_site(), 2, EVALUATE, b"metrics")
    assert server.open_up(42, 2, EVALUATE, ev) == b"metrics"


def test_replays_tampering_and_double_sealing_are_refused(tmp_path: Path) -> None:
    server, new_site = _pair(tmp_path)
    up1 = _exchange(server, new_site(), 1)
    server.open_up(42, 1, TRAIN, up1)
    up2 = _exchange(server, new_site(), 2)
    with pytest.raises(UpdateRejectedError) as old:
        server.open_up(42, 2, TRAIN, up1)  # last round's envelope
    assert old.value.reason == "replayed"
    with pytest.raises(UpdateRejectedError) as bad:
        server.open_up(42, 2, TRAIN, {"env": tamper(up2["env"])})
    assert bad.value.reason == "decryption_failed"
    assert server.open_up(42, 2, TRAIN, up2) == b"update"
    with pytest.raises(UpdateRejectedError) as twice:
        server.open_up(42, 2, TRAIN, up2)
    assert twice.value.reason == "replayed"
    with pytest.raises(FederationError, match="already sealed"):
        new_site().seal_up(2, TRAIN, b"again", ContentType.MODEL_UPDATE)  # no key reuse
    with pytest.raises(UpdateRejectedError) as empty:
        server.open_up(42, 3, TRAIN, {})
    assert empty.value.reason == "invalid_envelope"
    with pytest.raises(UpdateRejectedError) as unknown:
        server.open_up(7, 3, TRAIN, up2)
    assert unknown.value.reason == "unknown_node"


def test_site_without_state_or_with_foreign_downlink_fails(tmp_path: Path) -> None:
    server, new_site = _pair(tmp_path)
    server.open_up(42, 1, TRAIN, _exchange(server, new_site(), 1))
    down = server.seal_down(42, 2, TRAIN, b"x")
    lost = SiteChannel(
        simulated_identity(SEED, "site-0"), server.identity.public_keys(), tmp_path / "wiped"
    )
    with pytest.raises(FederationError, match="no channel"):
        lost.open_down(2, TRAIN, down)
    with pytest.raises(FederationError, match="no envelope"):
        new_site().open_down(2, TRAIN, {})
    (tmp_path / "site-0" / "channel.json").write_text("[]")
    with pytest.raises(FederationError, match="not an object"):
        new_site().open_down(2, TRAIN, down)


def test_response_without_a_pending_handshake_is_rejected(tmp_path: Path) -> None:
    server, new_site = _pair(tmp_path)
    up = _exchange(server, new_site(), 1)
    server.open_up(42, 1, TRAIN, up)
    forged = dict(up)
    forged["env"] = server.seal_down(42, 2, TRAIN, b"x")["env"]  # a round-2 header
    with pytest.raises(UpdateRejectedError) as exc:
        server.open_up(42, 2, TRAIN, forged)
    assert exc.value.reason == "invalid_envelope"


def test_adversary_roles_are_deterministic_and_validated() -> None:
    plan = AdversaryPlan.parse("boosted=0.1,tampered=0.05", 100, 3)
    roles = plan.roles()
    assert sorted(roles.values()).count("boosted") == 10
    assert sorted(roles.values()).count("tampered") == 5
    assert AdversaryPlan.from_json(plan.to_json()).roles() == roles
    for bad in ("boosted", "evil=0.1", "boosted=x", "boosted=0.7,tampered=0.7", "boosted=2"):
        with pytest.raises(FederationError):
            AdversaryPlan.parse(bad, 10, 0)
    with pytest.raises(FederationError):
        AdversaryPlan.from_json("{not json")
