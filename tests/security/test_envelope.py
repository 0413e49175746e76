"""One-shot sealed envelopes: store-and-forward with a KEM to the recipient and a signature."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fedge.security import (
    ONESHOT_OVERHEAD,
    ContentType,
    DecryptionFailed,
    InvalidEnvelope,
    InvalidSignature,
    KeyDirectory,
    KeyStoreError,
    OneShotOpener,
    OneShotSealer,
    ReplayDetected,
    RevokedSender,
    SiteIdentity,
    UnknownSender,
    UnsupportedSuite,
)
from fedge.security._composite import SIGNATURE_SIZE, CompositeSigningKey
from fedge.security._envelope import SIGNATURE_CONTEXT
from fedge.security._wire import ONESHOT_HEADER
from tests.security.helpers import flip


def test_round_trip_and_overhead(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    sealer = OneShotSealer(site, first_sequence=5)
    envelope = sealer.seal(coordinator.public_keys(), b"weights", ContentType.MODEL_UPDATE, 3)
    assert len(envelope) - len(b"weights") == ONESHOT_OVERHEAD == 4565
    opened = OneShotOpener(coordinator, directory).open(envelope)
    assert (opened.sender, opened.content_type, opened.round_id, opened.sequence) == (
        site.site_id,
        ContentType.MODEL_UPDATE,
        3,
        5,
    )
    assert opened.plaintext == b"weights"


def test_every_single_byte_flip_is_rejected(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    envelope = OneShotSealer(site).seal(coordinator.public_keys(), b"u" * 32, ContentType.CONTROL)
    opener = OneShotOpener(coordinator, directory)
    allowed = (
        InvalidEnvelope,
        UnsupportedSuite,
        UnknownSender,
        RevokedSender,
        InvalidSignature,
        DecryptionFailed,
    )
    for position in range(len(envelope)):
        with pytest.raises(allowed):
            opener.open(flip(envelope, position))
    assert opener.open(envelope).plaintext == b"u" * 32


def test_wrong_recipient(
    site: SiteIdentity, other_site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    envelope = OneShotSealer(site).seal(other_site.public_keys(), b"x", ContentType.CONTROL)
    with pytest.raises(InvalidEnvelope, match="addressed"):
        OneShotOpener(coordinator, directory).open(envelope)


def test_unknown_and_revoked_senders(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    stranger = SiteIdentity.generate()
    opener = OneShotOpener(coordinator, directory)
    with pytest.raises(UnknownSender):
        opener.open(
            OneShotSealer(stranger).seal(coordinator.public_keys(), b"x", ContentType.CONTROL)
        )
    envelope = OneShotSealer(site).seal(coordinator.public_keys(), b"x", ContentType.CONTROL)
    directory.revoke(site.site_id)
    with pytest.raises(RevokedSender):
        opener.open(envelope)


def test_replay_and_reorder_beyond_window(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    sealer = OneShotSealer(site, first_sequence=0)
    envelopes = [
        sealer.seal(coordinator.public_keys(), bytes([i]), ContentType.METRICS) for i in range(6)
    ]
    opener = OneShotOpener(coordinator, directory, window=4)
    opener.open(envelopes[0])
    with pytest.raises(ReplayDetected):
        opener.open(envelopes[0])
    opener.open(envelopes[5])
    opener.open(envelopes[3])
    with pytest.raises(ReplayDetected, match="behind"):
        opener.open(envelopes[1])


def test_forged_sender_with_own_signature_cannot_decrypt(
    site: SiteIdentity, other_site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    """An enrolled site that re-labels someone's envelope as its own and re-signs it gets
    nothing: the AEAD key is bound to the header, sender included."""
    envelope = OneShotSealer(site).seal(coordinator.public_keys(), b"secret", ContentType.CONTROL)
    body = bytearray(envelope[:-SIGNATURE_SIZE])
    body[8:24] = other_site.site_id
    forged = bytes(body) + other_site.signing_key.sign(bytes(body), SIGNATURE_CONTEXT)
    with pytest.raises(DecryptionFailed):
        OneShotOpener(coordinator, directory).open(forged)


def test_signature_by_unregistered_key(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    envelope = OneShotSealer(site).seal(coordinator.public_keys(), b"x", ContentType.CONTROL)
    body = envelope[:-SIGNATURE_SIZE]
    resigned = body + CompositeSigningKey.generate().sign(body, SIGNATURE_CONTEXT)
    with pytest.raises(InvalidSignature):
        OneShotOpener(coordinator, directory).open(resigned)


def test_sender_rotation_grace(coordinator: SiteIdentity, directory: KeyDirectory) -> None:
    old = SiteIdentity.generate()
    directory.register(old.public_keys(), now=0.0)
    stale = OneShotSealer(old).seal(coordinator.public_keys(), b"old", ContentType.CONTROL)
    new, statement = old.rotate()
    directory.rotate(statement, now=10.0)
    fresh = OneShotSealer(new).seal(coordinator.public_keys(), b"new", ContentType.CONTROL)
    assert OneShotOpener(coordinator, directory).open(fresh, now=20.0).plaintext == b"new"
    assert OneShotOpener(coordinator, directory).open(stale, now=20.0).plaintext == b"old"
    with pytest.raises(RevokedSender, match="not accepted"):
        OneShotOpener(coordinator, directory).open(stale, now=110.0)


def test_recipient_rotation_keeps_previous_key(site: SiteIdentity, directory: KeyDirectory) -> None:
    old = SiteIdentity.generate()
    envelope = OneShotSealer(site).seal(old.public_keys(), b"in flight", ContentType.CONTROL)
    new, _ = old.rotate()
    assert OneShotOpener(new, directory).open(envelope).plaintext == b"in flight"
    with pytest.raises(InvalidEnvelope, match="generation 0"):
        OneShotOpener(new.forget_previous(), directory).open(envelope)


def test_short_and_wrong_mode(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    opener = OneShotOpener(coordinator, directory)
    envelope = OneShotSealer(site).seal(coordinator.public_keys(), b"", ContentType.CONTROL)
    with pytest.raises(InvalidEnvelope, match="too short"):
        opener.open(envelope[: ONESHOT_HEADER.size])
    with pytest.raises(InvalidEnvelope, match="mode"):
        opener.open(envelope[:1] + b"\x01" + envelope[2:])
    with pytest.raises(InvalidEnvelope, match="round id"):
        OneShotSealer(site).seal(coordinator.public_keys(), b"", ContentType.CONTROL, -1)


def test_sealing_validates_caller_input(site: SiteIdentity, coordinator: SiteIdentity) -> None:
    with pytest.raises(UnsupportedSuite):
        OneShotSealer(site, suite=9)  # type: ignore[arg-type]
    with pytest.raises(InvalidEnvelope, match="content type"):
        OneShotSealer(site).seal(coordinator.public_keys(), b"", 0)  # type: ignore[arg-type]


# --- replay across restarts -------------------------------------------------------------


def _models(site: SiteIdentity, coordinator: SiteIdentity, n: int) -> list[bytes]:
    sealer = OneShotSealer(coordinator, first_sequence=100)
    return [
        sealer.seal(site.public_keys(), f"model {i}".encode(), ContentType.GLOBAL_MODEL)
        for i in range(1, n + 1)
    ]


def test_a_restarted_opener_refuses_envelopes_it_already_passed(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory, tmp_path: Path
) -> None:
    """A captured older model cannot be delivered after a restart as a downgrade."""
    state = tmp_path / "state" / "replay.json"
    one, two, three = _models(site, coordinator, 3)
    assert OneShotOpener(site, directory, state=state).open(two).plaintext == b"model 2"
    restarted = OneShotOpener(site, directory, state=state)
    with pytest.raises(ReplayDetected):
        restarted.open(one)
    with pytest.raises(ReplayDetected):
        restarted.open(two)
    assert restarted.open(three).plaintext == b"model 3"
    assert json.loads(state.read_text())["senders"] == {coordinator.site_id.hex(): 102}
    with pytest.raises(ReplayDetected):
        OneShotOpener(site, directory, state=state).open(three)
    # without state a new opener has no memory: this is what ``state`` is for
    assert OneShotOpener(site, directory).open(one).plaintext == b"model 1"


def test_strictly_increasing_opener_refuses_an_older_envelope_it_never_saw(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory, tmp_path: Path
) -> None:
    one, two = _models(site, coordinator, 2)
    opener = OneShotOpener(site, directory, window=1, state=tmp_path / "replay.json")
    opener.open(two)
    with pytest.raises(ReplayDetected, match="behind"):
        opener.open(one)


def test_forged_envelopes_do_not_move_the_persisted_mark(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory, tmp_path: Path
) -> None:
    state = tmp_path / "replay.json"
    one, two = _models(site, coordinator, 2)
    with pytest.raises(InvalidSignature):
        OneShotOpener(site, directory, state=state).open(flip(two, len(two) - 1))
    assert not state.exists()
    assert OneShotOpener(site, directory, state=state).open(one).plaintext == b"model 1"
    assert OneShotOpener(site, directory, state=state).open(two).plaintext == b"model 2"


def _state_file(tmp_path: Path, recipient: bytes, senders: object) -> Path:
    path = tmp_path / "replay.json"
    document = {"version": 1, "recipient": recipient.hex(), "senders": senders}
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not JSON"),
        ("[]", "version-1"),
        ('{"version": 2, "senders": {}}', "version-1"),
        ('{"version": 1, "recipient": "00", "senders": {}}', "another site"),
    ],
)
def test_unusable_replay_state_is_an_error_not_a_fresh_start(
    site: SiteIdentity, directory: KeyDirectory, tmp_path: Path, content: str, match: str
) -> None:
    path = tmp_path / "replay.json"
    path.write_text(content)
    with pytest.raises(KeyStoreError, match=match):
        OneShotOpener(site, directory, state=path)


@pytest.mark.parametrize(
    ("senders", "match"),
    [
        ([], "no sender table"),
        ({"zz" * 16: 1}, "not hex"),
        ({"00" * 15: 1}, "wrong size"),
        ({"00" * 16: -1}, "not a sequence number"),
        ({"00" * 16: 2**64}, "not a sequence number"),
        ({"00" * 16: True}, "not a sequence number"),
        ({"00" * 16: "7"}, "not a sequence number"),
    ],
)
def test_malformed_sender_marks_are_refused(
    site: SiteIdentity, directory: KeyDirectory, tmp_path: Path, senders: object, match: str
) -> None:
    path = _state_file(tmp_path, site.site_id, senders)
    with pytest.raises(KeyStoreError, match=match):
        OneShotOpener(site, directory, state=path)


def test_unreadable_replay_state_is_refused(
    site: SiteIdentity, directory: KeyDirectory, tmp_path: Path
) -> None:
    path = tmp_path / "replay.json"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(KeyStoreError, match="unreadable"):
        OneShotOpener(site, directory, state=path)
    with pytest.raises(KeyStoreError, match="unreadable"):
        OneShotOpener(site, directory, state=tmp_path)  # a folder, not a file


def test_an_envelope_is_not_handed_over_when_its_mark_cannot_be_written(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory, tmp_path: Path
) -> None:
    (one,) = _models(site, coordinator, 1)
    opener = OneShotOpener(site, directory, state=tmp_path / "state" / "replay.json")
    (tmp_path / "state").write_text("")  # its folder can no longer be made
    with pytest.raises(KeyStoreError, match="cannot write"):
        opener.open(one)
    (tmp_path / "state").unlink()
    assert opener.open(one).plaintext == b"model 1"  # the failure did not count as delivery


def test_replay_state_is_replaced_atomically(
    site: SiteIdentity,
    coordinator: SiteIdentity,
    directory: KeyDirectory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crash mid-write leaves the old file whole: the new one is renamed over it."""
    state = tmp_path / "replay.json"
    one, two = _models(site, coordinator, 2)
    OneShotOpener(site, directory, state=state).open(one)
    before = state.read_text()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", crash)
        with pytest.raises(KeyStoreError, match="disk full"):
            OneShotOpener(site, directory, state=state).open(two)
    assert state.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["replay.json"]  # no temp file left
    assert (state.stat().st_mode & 0o777) == 0o600


def test_the_agent_refuses_an_older_model_after_a_restart(
    site: SiteIdentity, coordinator: SiteIdentity, tmp_path: Path
) -> None:
    """The edge agent's model opener keeps its marks next to its store."""
    from fedge.core import ModelBundle
    from fedge.edge_agent import ModelRejected
    from fedge.edge_agent._config import AgentConfig, SecurityConfig, StoreConfig
    from fedge.edge_agent._opener import ModelOpener
    from fedge.security import save_identity

    save_identity(tmp_path / "site.key", site, b"test kek bytes", log2_n=10)
    (tmp_path / "kek").write_bytes(b"test kek bytes")
    (tmp_path / "coordinator.pub").write_bytes(coordinator.public_keys().to_bytes())
    config = AgentConfig(
        site="a",
        store=StoreConfig(path=tmp_path / "agent.db"),
        security=SecurityConfig(
            tmp_path / "site.key", tmp_path / "coordinator.pub", tmp_path / "kek"
        ),
    )
    sealer = OneShotSealer(coordinator)
    old, new = (
        sealer.seal(site.public_keys(), ModelBundle(v, b"onnx").encode(), ContentType.GLOBAL_MODEL)
        for v in ("v1", "v2")
    )
    assert ModelOpener(config).open(new).version == "v2"
    restarted = ModelOpener(config)
    for envelope in (old, new):
        with pytest.raises(ModelRejected, match=r"already accepted|behind"):
            restarted.open(envelope)
    assert (tmp_path / "agent.replay.json").exists()


def test_two_sealers_of_one_identity_stay_in_order(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory, tmp_path: Path
) -> None:
    """Two workers of one coordinator each hold a sealer; the one started later must not
    push the site's mark past what the other seals next, or its models would be refused."""
    early = OneShotSealer(site)
    for _ in range(3):  # the earlier worker's counter falls behind the clock
        early.seal(coordinator.public_keys(), b"x", ContentType.CONTROL)
    late = OneShotSealer(site)
    opener = OneShotOpener(coordinator, directory, window=1, state=tmp_path / "marks.json")
    for sealer in (late, early, late, early):
        opener.open(sealer.seal(coordinator.public_keys(), b"m", ContentType.GLOBAL_MODEL))
