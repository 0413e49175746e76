"""Security benchmark: ``python -m bench.security`` -> ``bench/results/security.json``.

Figures per available provider: full mutual handshake CPU time (both sides together),
session seal+open of 16 KiB, AEAD throughput on 512 KiB, and both envelope overheads.
Medians over many runs; CPU time from ``time.process_time``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from bench._common import write_result
from fedge.security import (
    ContentType,
    Initiator,
    KeyDirectory,
    OneShotOpener,
    OneShotSealer,
    ProviderUnavailable,
    Responder,
    Session,
    SessionPolicy,
    SiteIdentity,
    Suite,
    get_provider,
)
from fedge.security._provider import Provider


def _median_us(fn: Callable[[], object], runs: int, clock: Callable[[], float]) -> float:
    for _ in range(max(3, runs // 20)):  # warm up caches and allocators
        fn()
    samples = []
    for _ in range(runs):
        start = clock()
        fn()
        samples.append(clock() - start)
    return round(statistics.median(samples) * 1e6, 1)


def _measure(provider: Provider) -> dict[str, Any]:
    site, coordinator = SiteIdentity.generate(provider), SiteIdentity.generate(provider)
    directory = KeyDirectory(provider=provider)
    directory.register(site.public_keys())
    coordinator_keys = coordinator.public_keys()
    coordinator_keys.kem_key()  # a site parses its coordinator's static key once

    def full_handshake(suite: Suite = Suite.XWING_AES256GCM) -> tuple[Session, Session]:
        initiator = Initiator(site, coordinator_keys, suite=suite, provider=provider)
        response, theirs = Responder(coordinator, directory, provider=provider).respond(
            initiator.start()
        )
        return initiator.finish(response), theirs

    figures: dict[str, Any] = {
        "handshake_cpu_us": _median_us(full_handshake, 400, time.process_time),
        "handshake_wall_us": _median_us(full_handshake, 400, time.perf_counter),
    }
    policy = SessionPolicy(rekey_messages=2**40)
    initiator = Initiator(site, coordinator_keys, provider=provider, policy=policy)
    response, theirs = Responder(coordinator, directory, provider=provider, policy=policy).respond(
        initiator.start()
    )
    mine = initiator.finish(response)
    payload_16k = bytes(16 * 1024)
    figures["seal_open_us_16k"] = _median_us(
        lambda: theirs.open(mine.seal(payload_16k, ContentType.MODEL_UPDATE)),
        2000,
        time.perf_counter,
    )
    payload_512k = bytes(512 * 1024)
    for suite, key in (
        (Suite.XWING_AES256GCM, "aead_mb_s_512k"),
        (Suite.XWING_CHACHA20POLY1305, "aead_mb_s_512k_chacha20poly1305"),
    ):
        a, b = full_handshake(suite)

        def seal_open(a: Session = a, b: Session = b) -> object:
            return b.open(a.seal(payload_512k, ContentType.MODEL_UPDATE))

        us = _median_us(seal_open, 300, time.perf_counter)
        figures[key] = round(len(payload_512k) / us, 1)  # bytes/µs == MB/s
    envelope = mine.seal(payload_16k, ContentType.MODEL_UPDATE)
    figures["envelope_overhead_bytes_session"] = len(envelope) - len(payload_16k)

    sealer = OneShotSealer(site, provider=provider)
    opener = OneShotOpener(coordinator, directory, provider=provider)
    sealed = sealer.seal(coordinator_keys, payload_16k, ContentType.MODEL_UPDATE)
    figures["envelope_overhead_bytes_oneshot"] = len(sealed) - len(payload_16k)
    figures["oneshot_seal_us_16k"] = _median_us(
        lambda: sealer.seal(coordinator_keys, payload_16k, ContentType.MODEL_UPDATE),
        200,
        time.perf_counter,
    )
    fresh = [
        sealer.seal(coordinator_keys, payload_16k, ContentType.MODEL_UPDATE) for _ in range(230)
    ]
    it = iter(fresh)
    figures["oneshot_open_us_16k"] = _median_us(
        lambda: opener.open(next(it)), 200, time.perf_counter
    )
    return figures


ACCEPTANCE = {
    "handshake_cpu_us": ("<=", 1000.0),
    "envelope_overhead_bytes_session": ("<=", 64),
    "aead_mb_s_512k": (">=", 500.0),
}


def main() -> None:
    providers: dict[str, Any] = {}
    for name in ("cryptography", "oqs"):
        try:
            provider = get_provider(name)
        except ProviderUnavailable as exc:
            providers[name] = {"available": False, "reason": str(exc)}
            continue
        providers[name] = {"available": True, **_measure(provider)}
    default = providers["cryptography"]
    acceptance = {
        key: {
            "limit": f"{op} {limit}",
            "measured": default[key],
            "met": default[key] <= limit if op == "<=" else default[key] >= limit,
        }
        for key, (op, limit) in ACCEPTANCE.items()
    }
    path = write_result(
        "security",
        {
            **{k: v for k, v in default.items() if k != "available"},
            "providers": providers,
            "acceptance": acceptance,
            "notes": "handshake: both sides, static peer keys pre-parsed, median of 400; "
            "seal_open and aead: session mode, median wall time; MB/s = 10^6 bytes/s",
        },
    )
    for name, figures in providers.items():
        print(name, figures)
    print("acceptance", acceptance)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
