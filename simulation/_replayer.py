"""The fleet's KPI replayer: the generator's (or an imported file's) telemetry, published
on each site's ``fedge/v1/<site>/kpi`` topic as the RAN would.

First a back-fill of ``BACKFILL_DAYS`` of history, published as fast as the broker takes
it (QoS 1), so that sites can forecast and train at once; then one 5-minute step of every
site each ``300 / speed`` seconds of wall time. The replayed clock is anchored on a Monday
00:00 UTC shifted to the series' own start, so time of day and day of week match the
telemetry's; a series shorter than the replay loops (a generated one is whole weeks
long, so its weekly pattern stays in phase).

Its position (the next step per site) and every pacing segment (wall time, step, speed)
are kept in ``replayer/position.json``, so a restarted replayer continues where it
stopped, and the fleet's report maps wall time to replayed steps. Every paced message's
publish time is appended to ``replayer/published.csv`` (the ingest lag's start).

Run as ``python -m fedge.simulation._replayer FLEET_DIR`` (``fedge fleet up`` does).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.core import KPI_NAMES, datetime_minute_of_week
from fedge.simulation._errors import DataError
from fedge.simulation._fleet import (
    BACKFILL_DAYS,
    STEP_SECONDS,
    FleetError,
    FleetState,
    load_state,
    tls_files,
)

__all__ = [
    "CELL",
    "ReplaySource",
    "Replayer",
    "kpi_message",
    "main",
    "open_source",
    "wall_to_index",
]

CELL = "c0"  # each fleet site serves one cell
GENERATED_DAYS = 56  # eight whole weeks, looped
WEEK_S = 7 * 86400
_INFLIGHT = 500


@dataclass(frozen=True)
class ReplaySource:
    """One series per fleet site (a file's sites are reused in turn for more fleet sites)."""

    values: list[NDArray[np.float32]]  # (steps, KPIs) per series
    archetypes: list[str]
    start_minute_of_week: list[int]
    num_sites: int

    def series(self, index: int) -> NDArray[np.float32]:
        return self.values[index % len(self.values)]

    def archetype(self, index: int) -> str:
        return self.archetypes[index % len(self.archetypes)]

    def shift_s(self, index: int) -> int:
        """Seconds from the replay's Monday to this series' first step's time of week,
        less a week when not zero (so that no site runs ahead of the others)."""
        offset = 60 * self.start_minute_of_week[index % len(self.values)]
        return offset - WEEK_S if offset else 0


def open_source(state: FleetState) -> ReplaySource:
    """The telemetry the fleet replays: ``--data FILE`` (the import format) or ``--data
    DIR`` (3GPP PM XML), else the generator with the fleet's seed."""
    n = int(state.spec["sites"])
    data = state.spec.get("data")
    if data:
        from fedge.simulation._pm_import import read_site_data

        try:
            series, _ = read_site_data(Path(data), step_minutes=STEP_SECONDS // 60)
        except DataError as exc:
            raise FleetError(f"--data: {exc}") from exc
        if not series:
            raise FleetError(f"--data: {data} holds no site")
        return ReplaySource(
            [s.values for s in series],
            [s.archetype for s in series],
            [int(datetime_minute_of_week(np.array([s.start]))[0]) for s in series],
            n,
        )
    from fedge.simulation._generator import GeneratorConfig, SiteGenerator

    gen = SiteGenerator(GeneratorConfig(num_sites=n, days=GENERATED_DAYS, seed=state.spec["seed"]))
    sites = [gen.site(i) for i in range(n)]
    return ReplaySource(
        [s.values for s in sites],
        [s.archetype for s in sites],
        [int(datetime_minute_of_week(np.array([s.start]))[0]) for s in sites],
        n,
    )


def kpi_message(row: NDArray[np.float32], ts: float) -> bytes:
    """One KPI sample as the agent's schema (v1) has it; a KPI not reported is null."""
    kpis = {
        name: (None if math.isnan(float(v)) else round(float(v), 4))
        for name, v in zip(KPI_NAMES, row, strict=True)
    }
    return json.dumps({"v": 1, "cell": CELL, "ts": ts, "kpis": kpis}).encode()


class Replayer:
    """Publishes every site's telemetry on its topic; see the module's docstring."""

    def __init__(self, state: FleetState, stop: threading.Event) -> None:
        self.state = state
        self.stop = stop
        self.dir = state.root / "replayer"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.source = open_source(state)
        self.sites = [s.site_id for s in state.sites]
        if not all(self.sites):
            raise FleetError("replayer: every site must be enrolled first")
        self.position_file = self.dir / "position.json"
        self.position = self._load_position()
        self._client = self._connect()

    def _load_position(self) -> dict[str, Any]:
        if self.position_file.exists():
            loaded: dict[str, Any] = json.loads(self.position_file.read_text())
            return loaded
        now = time.time()
        # A Monday 00:00 UTC before the back-fill's start (1970-01-05 was a Monday).
        monday = 4 * 86400 + ((now - BACKFILL_DAYS * 86400 - 4 * 86400) // WEEK_S - 1) * WEEK_S
        now_index = int((now - monday) // STEP_SECONDS)
        first = now_index - BACKFILL_DAYS * 86400 // STEP_SECONDS
        return {
            "base_ts": monday,
            "backfill_end": now_index,
            "next": [first] * len(self.sites),
            "segments": [],
            # per site: the store's step of replay index 0
            "step0": [
                int(monday + self.source.shift_s(i)) // STEP_SECONDS for i in range(len(self.sites))
            ],
        }

    def _save(self) -> None:
        tmp = self.position_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.position) + "\n")
        os.replace(tmp, self.position_file)

    def _connect(self) -> Any:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fedge-replayer-{os.getpid()}")
        client.max_inflight_messages_set(_INFLIGHT)
        client.max_queued_messages_set(0)
        connected = threading.Event()
        client.on_connect = lambda *_: connected.set()
        if self.state.tls:  # the broker wants the replayer's certificate (its user name)
            files = tls_files(self.state)
            cert, key = files["replayer"]
            client.tls_set(ca_certs=str(files["ca"]), certfile=str(cert), keyfile=str(key))
        client.connect("127.0.0.1", int(self.state.ports["mosquitto"]), keepalive=30)
        client.loop_start()
        if not connected.wait(20):
            raise FleetError("replayer: the broker did not accept the connection in 20 s")
        return client

    def ts(self, site: int, index: int) -> float:
        return float(self.position["base_ts"] + self.source.shift_s(site) + index * STEP_SECONDS)

    def _publish(self, site: int, index: int) -> Any:
        series = self.source.series(site)
        row = series[index % len(series)]
        topic = f"fedge/v1/{self.sites[site]}/kpi"
        return self._client.publish(topic, kpi_message(row, self.ts(site, index)), qos=1)

    def backfill(self) -> int:
        """Publish each site's history up to the back-fill's end as fast as it is taken."""
        end = int(self.position["backfill_end"])
        sent = 0
        last = None
        for site in range(len(self.sites)):
            for index in range(int(self.position["next"][site]), end):
                if self.stop.is_set():
                    return sent
                last = self._publish(site, index)
                sent += 1
                if sent % _INFLIGHT == 0:
                    last.wait_for_publish(timeout=60)
            self.position["next"][site] = max(end, int(self.position["next"][site]))
        if last is not None:
            last.wait_for_publish(timeout=60)
        self._save()
        return sent

    def paced(self) -> None:
        """One step of every site each ``300 / speed`` s, until stopped."""
        speed = float(self.state.spec["speed"])
        index = min(int(i) for i in self.position["next"])
        t0 = time.time()
        self.position["segments"].append({"wall": t0, "index": index, "speed": speed})
        self._save()
        log = (self.dir / "published.csv").open("a", buffering=1)
        try:
            while not self.stop.is_set():
                due = t0 + (index - self.position["segments"][-1]["index"]) * STEP_SECONDS / speed
                if self.stop.wait(max(0.0, due - time.time())):
                    break
                for site in range(len(self.sites)):
                    if int(self.position["next"][site]) > index:
                        continue
                    self._publish(site, index)
                    log.write(f"{site},{index},{time.time():.4f}\n")
                    self.position["next"][site] = index + 1
                index += 1
                self._save()
        finally:
            log.close()

    def close(self) -> None:
        self._save()
        self._client.disconnect()
        self._client.loop_stop()


def wall_to_index(position: dict[str, Any], wall: float) -> float:
    """The replayed step (fractional) the fleet was at, at wall time ``wall``."""
    segments = [s for s in position.get("segments", []) if s["wall"] <= wall]
    if not segments:
        return float(position["backfill_end"])
    seg = segments[-1]
    return float(seg["index"] + (wall - seg["wall"]) * seg["speed"] / 300.0)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m fedge.simulation._replayer FLEET_DIR", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        replayer = Replayer(load_state(Path(args[0])), stop)
    except FleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        sent = replayer.backfill()
        print(f"back-fill: {sent} messages", flush=True)
        replayer.paced()
    finally:
        replayer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
