"""What a Prometheus scrape of the coordinator costs as the fleet grows: ``GET /metrics``
reads the registry (runs, rounds, audit counts, every site's last contact and error, the
newest actions) on each scrape. Figures per fleet size: the scrape's median and p95
wall time, the registry queries' own time (``fedge_coordinator_metrics_query_seconds``),
the series count (which must not grow with the fleet) and the body size.

SQLite, in process (the app from its factory, no network), rows written straight into
the registry: per site a health report with an RMSE and two signed-shaped actions, plus
runs, rounds and audit entries. ``python -m bench.monitoring`` writes
``bench/results/monitoring.json``."""

from __future__ import annotations

import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from bench._common import write_result
from fedge.coordinator import CoordinatorSettings
from fedge.coordinator._actions import ActionRecord
from fedge.coordinator._audit import audit_entry
from fedge.coordinator._schema import (
    Round,
    RoundStatus,
    Run,
    RunStatus,
    Site,
    SiteHealth,
    SiteState,
)
from fedge.coordinator.api import create_app
from fedge.security import SiteIdentity, save_identity

FLEETS = (100, 1000, 5000)
SCRAPES = 30
RUNS, ROUNDS_PER_RUN, AUDIT_ROWS = 50, 10, 20_000


def _fill(engine: Any, sites: int, now: float) -> None:
    with Session(engine) as session:
        for i in range(sites):
            site = f"{i:032x}"
            status = SiteState.REVOKED if i % 50 == 0 else SiteState.ACTIVE
            heard = now - (i % 900)  # some late, some offline under the default settings
            session.add(Site(id=site, public_keys=b"k", status=status, enrolled_at=now - 86400,
                             last_seen=heard))  # fmt: skip
            session.add(SiteHealth(site_id=site, received_at=heard, sent_at=heard,
                                   store_bytes=1 << 20, alerts_warning=0, alerts_critical=0,
                                   supernode="running", backlog=0, rmse=0.05 + (i % 7) / 100))  # fmt: skip
            for kind, body in (("strategic", {"mode": "light_sleep"}),
                               ("tactical", {"shares": {"embb": 0.6, "urllc": 0.4}})):  # fmt: skip
                session.add(ActionRecord(site_id=site, kind=kind, body=json.dumps(body).encode(),
                                         signature=b"s", decided_at=now, valid_until=now + 900,
                                         policy_version="p", source="policy"))  # fmt: skip
        for r in range(RUNS):
            run_id = secrets.token_hex(16)
            session.add(Run(id=run_id, num_rounds=ROUNDS_PER_RUN, status=RunStatus.COMPLETED,
                            token_hash="0" * 64, created_at=now, created_by="bench"))  # fmt: skip
            for n in range(1, ROUNDS_PER_RUN + 1):
                session.add(Round(run_id=run_id, number=n, strategy="fedavg", participants=50,
                                  status=RoundStatus.COMPLETED, started_at=now - 10,
                                  finished_at=now - 5 + r, metrics={"accepted": 50}))  # fmt: skip
        for i in range(AUDIT_ROWS):
            action = ("model.promote", "model.rollback", "site.enroll", "api_key.create")[i % 4]
            session.add(audit_entry("bench", action, "", "ok", ""))
        session.commit()


def _measure(root: Path, sites: int) -> dict[str, Any]:
    save_identity(root / "coordinator.key", SiteIdentity.generate(), b"fedge-dev-kek", log2_n=10)
    settings = CoordinatorSettings(database_url=f"sqlite:///{root / 'c.db'}",
                                   model_store=root / "models",
                                   identity_file=root / "coordinator.key")  # fmt: skip
    with TestClient(create_app(settings)) as client:
        _fill(client.app.state.coordinator.engine, sites, time.time())  # type: ignore[attr-defined]
        client.get("/metrics")  # warm the connection pool and the statement cache
        took, queries = [], []
        for _ in range(SCRAPES):
            started = time.perf_counter()
            body = client.get("/metrics").text
            took.append(time.perf_counter() - started)
            for line in body.splitlines():
                if line.startswith("fedge_coordinator_metrics_query_seconds "):
                    queries.append(float(line.split()[1]))
    series = [line for line in body.splitlines() if line and not line.startswith("#")]
    registry = [s for s in series if not s.startswith(("fedge_coordinator_request",
                                                       "fedge_coordinator_denials"))]  # fmt: skip
    took.sort()
    return {
        "sites": sites,
        "scrape_ms_median": round(1000 * statistics.median(took), 2),
        "scrape_ms_p95": round(1000 * took[int(0.95 * (len(took) - 1))], 2),
        "registry_query_ms_median": round(1000 * statistics.median(queries), 2),
        "registry_series": len(registry),
        "body_bytes": len(body.encode()),
    }


def main() -> None:
    import logging

    logging.getLogger("fedge.coordinator.events").setLevel(logging.ERROR)  # the fill's rows
    rows = []
    for sites in FLEETS:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(_measure(Path(tmp), sites))
            print(rows[-1])
    path = write_result("monitoring", {
        "database": "sqlite", "scrapes": SCRAPES, "runs": RUNS,
        "rounds": RUNS * ROUNDS_PER_RUN, "audit_rows": AUDIT_ROWS, "fleets": rows,
    })  # fmt: skip
    print(path)


if __name__ == "__main__":
    main()
