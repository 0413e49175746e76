"""Forecast ingest in one group commit: several admitted requests are written in one
transaction, and each learns how many of its rows were new. A row that two batches of
the group share counts for the first, a row repeated within one batch counts once (its
first values kept), and a replayed request in the same group is refused. On SQLite and
PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import time
from concurrent.futures import Future
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from fedge.coordinator import Coordinator, CoordinatorSettings, Role, sign_request
from fedge.coordinator._access import _Admission
from fedge.coordinator._health import write_forecasts
from fedge.coordinator._schema import ForecastBatch
from fedge.coordinator.api import create_app
from fedge.security import SiteIdentity
from tests.coordinator.helpers import Fleet

TARGET = "/api/v1/site/forecasts"


def _batch(steps: list[int], value: float = 0.5) -> dict[str, Any]:
    return {
        "model_version": "v1",
        "forecasts": [
            {"cell": "c0", "step": s + 1, "made_step": s, "values": [value, 1e-300, 3.0]}
            for s in steps
        ],
        "actuals": [{"cell": "c0", "step": s, "values": [value]} for s in steps],
    }


def test_one_group_counts_each_request_s_new_rows(settings: CoordinatorSettings) -> None:
    coordinator = Coordinator(settings)
    try:
        with TestClient(create_app(settings, coordinator)) as client:
            fleet = Fleet.with_roles(client, [Role.OPERATOR])
            site, other = fleet.enroll(), fleet.enroll()
        requests = coordinator.site_requests

        def admission(identity: SiteIdentity, body: dict[str, Any]) -> _Admission:
            raw = json.dumps(body).encode()
            headers = sign_request(identity, "POST", TARGET, raw)
            signed = requests.parse(method="POST", target=TARGET, body=raw, headers=headers)
            keys = requests.load_keys(identity.site_id)
            assert requests.verify(signed, keys) is False
            batch = ForecastBatch.model_validate_json(raw)
            expires = time.time() + 60
            return _Admission(
                signed, keys.generation, False, expires, write_forecasts, batch, Future()
            )

        first = admission(site, _batch([1, 2, 3]))
        overlapping = admission(site, _batch([3, 4], value=0.25))  # step 3 is first's
        repeated = admission(site, _batch([7, 7]))  # one row twice in one batch
        foreign = admission(other, _batch([1, 2, 3]))  # the same rows of another site
        replay = dataclasses.replace(first, done=Future())  # the same request again
        group = [first, overlapping, repeated, foreign, replay]
        requests._commit(group)
        assert [a.done.result(timeout=5) for a in group[:4]] == [6, 2, 2, 6]
        with pytest.raises(Exception, match="replayed"):
            group[4].done.result(timeout=5)
        with coordinator.engine.connect() as conn:
            rows = conn.execute(
                text('SELECT step, "values" FROM forecasts WHERE site_id = :s ORDER BY step'),
                {"s": site.site_id.hex()},
            ).all()
            actuals = conn.execute(text("SELECT count(*) FROM actuals")).scalar_one()
        values = [json.loads(v) if isinstance(v, str) else v for _, v in rows]
        assert [s for s, _ in rows] == [2, 3, 4, 5, 8]
        assert values[2] == [0.5, 1e-300, 3.0]  # the first batch's values of step 3 stand
        assert values[3] == [0.25, 1e-300, 3.0]
        assert actuals == 3 + 1 + 1 + 3
    finally:
        coordinator.close()


def test_a_group_waits_for_the_requests_being_checked(settings: CoordinatorSettings) -> None:
    """While a request is between its checks and its submission, the writer holds the
    group it has open (up to ``linger_s``): both nonces go in one commit."""
    coordinator = Coordinator(settings)
    try:
        with TestClient(create_app(settings, coordinator)) as client:
            site = Fleet.with_roles(client, [Role.OPERATOR]).enroll()
        requests = coordinator.site_requests
        requests.linger_s = 30.0  # bounded by the second request, not by this
        groups: list[int] = []
        commit = requests._commit

        def counted(pending: list[_Admission]) -> None:
            groups.append(len(pending))
            commit(pending)

        requests._commit = counted  # type: ignore[method-assign]
        keys = requests.load_keys(site.site_id)

        def signed(step: int) -> Any:
            raw = json.dumps(_batch([step])).encode()
            headers = sign_request(site, "POST", TARGET, raw)
            return requests.parse(method="POST", target=TARGET, body=raw, headers=headers)

        with requests.arriving():
            first = requests.submit(signed(1), keys)
            deadline = time.monotonic() + 30
            while not requests._queue.empty() and time.monotonic() < deadline:
                time.sleep(0.001)  # until the writer has taken it into a group
            assert requests._queue.empty() and not first.done()
            second_request = signed(2)
        second = requests.submit(second_request, keys)  # as ``site_request``: once checked
        assert first.result(timeout=30) is None and second.result(timeout=30) is None
        assert groups == [2]
    finally:
        coordinator.close()
