"""The role x endpoint matrix: every operator route, every role, plus no key and a bad
key. An allowed call must get past authorization (any status but 401/403); a refused one
must get exactly 401 (no valid key) or 403 (role too low), and be audited."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fedge.coordinator import CoordinatorSettings, Role
from fedge.coordinator._schema import RunCreate
from fedge.coordinator.api import create_app
from tests.coordinator.helpers import Fleet, onnx_model
from tests.coordinator.policies import write_policies

#: (method, path, json body, least role). Site and enrollment calls are not here: they
#: carry no operator key; the OpenAPI paths must be exactly these plus UNAUTHENTICATED (tests: test_signed.py, test_api.py).
MATRIX: list[tuple[str, str, dict[str, object] | None, Role]] = [
    ("GET", "/api/v1/sites", None, Role.VIEWER),
    ("GET", "/api/v1/sites/{site}", None, Role.VIEWER),
    ("POST", "/api/v1/sites/{site}/revoke", None, Role.ADMIN),
    ("GET", "/api/v1/sites/{site}/health", None, Role.VIEWER),
    ("GET", "/api/v1/health/sites", None, Role.VIEWER),
    ("GET", "/api/v1/actions", None, Role.VIEWER),
    ("GET", "/api/v1/topology", None, Role.VIEWER),
    ("PUT", "/api/v1/topology", {"clusters": []}, Role.ADMIN),
    ("GET", "/api/v1/retraining", None, Role.VIEWER),
    ("GET", "/api/v1/models", None, Role.VIEWER),
    ("GET", "/api/v1/models/{model}", None, Role.VIEWER),
    ("POST", "/api/v1/models", {"onnx": True}, Role.OPERATOR),
    ("POST", "/api/v1/models/{model}/promote", None, Role.ADMIN),
    ("POST", "/api/v1/models/rollback", None, Role.ADMIN),
    ("GET", "/api/v1/rollouts", None, Role.VIEWER),
    ("GET", "/api/v1/rollouts/{rollout}", None, Role.VIEWER),
    ("GET", "/api/v1/rounds", None, Role.VIEWER),
    ("GET", "/api/v1/runs", None, Role.VIEWER),
    ("GET", "/api/v1/runs/{run}", None, Role.VIEWER),
    ("POST", "/api/v1/runs", {}, Role.OPERATOR),  # no SuperLink here: 503, after the role
    ("POST", "/api/v1/runs/{run}/rerun", None, Role.OPERATOR),
    ("DELETE", "/api/v1/runs/{run}", None, Role.OPERATOR),
    ("GET", "/api/v1/forecasts", None, Role.VIEWER),
    ("POST", "/api/v1/enrollment/tokens", {"ttl_seconds": 60}, Role.OPERATOR),
    ("GET", "/api/v1/keys", None, Role.ADMIN),
    ("POST", "/api/v1/keys", {"name": "new-{who}", "role": "viewer"}, Role.ADMIN),
    ("POST", "/api/v1/keys/{key}/revoke", None, Role.ADMIN),
    ("GET", "/api/v1/audit", None, Role.ADMIN),
    ("POST", "/api/v1/decisions", {"decide": True}, Role.OPERATOR),
]
UNAUTHENTICATED = ["GET /healthz", "GET /metrics", "GET /api/v1/enrollment/authority",
                   "POST /api/v1/enrollment/begin", "POST /api/v1/enrollment/complete",
                   "GET /api/v1/site/model", "POST /api/v1/site/model/verdict", "POST /api/v1/site/forecasts",
                   "POST /api/v1/site/health", "GET /api/v1/site/actions", "POST /api/v1/site/actions/ack",
                   "POST /api/v1/site/rotate"]  # fmt: skip
#: Authenticated by a run's token, not an operator key (tests: test_runs.py).
RUN_TOKEN = ["PUT /api/v1/runs/{run_id}/rounds/{number}", "POST /api/v1/runs/{run_id}/model",
             "POST /api/v1/runs/{run_id}/failure"]  # fmt: skip
CALLERS = ["none", "bad", *[r.value for r in Role]]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    identity_file: object,
) -> Iterator[tuple[Fleet, dict[str, str]]]:
    import shutil

    root = tmp_path_factory.mktemp(f"authz-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'c.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    key = root / "coordinator.key"
    shutil.copy(str(identity_file), key)
    write_policies(root / "policies")
    settings = CoordinatorSettings(
        database_url=url,
        model_store=root / "m",
        identity_file=key,
        policy_dir=root / "policies",
        denial_burst=100_000,  # every refusal of the matrix audited, none turned into a 429
    )
    app = create_app(settings)
    with TestClient(app) as client:
        fleet = Fleet.with_roles(client, list(Role))
        site = fleet.enroll()
        model = fleet.upload("matrix")
        names = {
            "site": site.site_id.hex(),
            "model": str(model),
            "key": str(
                client.post(
                    "/api/v1/keys",
                    json={"name": "to-revoke", "role": "viewer"},
                    headers=fleet.as_(Role.ADMIN),
                ).json()["id"]
            ),
        }
        names["run"] = app.state.coordinator.federation.create("operator:test", RunCreate())[0].id
        names["rollout"] = "1"  # none yet: a 404 once the role is checked
        names["app"] = app  # type: ignore[assignment]
        yield fleet, names


def test_matrix_covers_every_route(world: tuple[Fleet, dict[str, str]]) -> None:
    _, names = world
    app: FastAPI = names["app"]  # type: ignore[assignment]
    routes = {f"{m.upper()} {p}" for p, ops in app.openapi()["paths"].items() for m in ops}
    covered = {
        f"{m} {p.replace('{site}', '{site_id}').replace('{model}', '{model_id}').replace('{key}', '{key_id}').replace('{run}', '{run_id}').replace('{rollout}', '{rollout_id}')}"
        for m, p, _, _ in MATRIX
    }
    assert routes == covered | set(UNAUTHENTICATED) | set(RUN_TOKEN)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(
    ("method", "path", "body", "least"), MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX]
)
def test_role_matrix(
    world: tuple[Fleet, dict[str, str]],
    caller: str,
    method: str,
    path: str,
    body: dict[str, object] | None,
    least: Role,
) -> None:
    fleet, names = world
    headers = {"none": {}, "bad": {"X-API-Key": "fedge-op.not-a-key"}}.get(caller)
    if headers is None:
        headers = fleet.as_(Role(caller))
    if body is not None and body.get("decide"):
        body = {"kind": "strategic", "site_ids": [names["site"]], "observations": [[0.0] * 17]}
    elif body is not None and body.get("onnx"):
        body = {"onnx_base64": base64.b64encode(onnx_model(f"{caller}-{path}")).decode()}
    elif body is not None:
        body = {k: (v.format(who=caller) if isinstance(v, str) else v) for k, v in body.items()}
    before = len(fleet.client.get("/api/v1/audit?limit=1000", headers=fleet.as_(Role.ADMIN)).json())
    answer = fleet.client.request(method, path.format(**names), json=body, headers=headers)
    if caller in ("none", "bad"):
        expected: int | None = 401
    elif Role(caller).rank < least.rank:
        expected = 403
    else:
        expected = None
    if expected is None:
        assert answer.status_code not in (401, 403), answer.text
        return
    assert answer.status_code == expected, answer.text
    assert answer.json()["detail"]
    log = fleet.client.get("/api/v1/audit?limit=1000", headers=fleet.as_(Role.ADMIN)).json()
    # the rows since the request: a row of an earlier allowed request may land late
    denials = [row for row in log[before:] if row["outcome"] == "denied"]
    assert len(denials) == 1, log[before:]
    denial = denials[0]
    assert denial["detail"].startswith(str(expected))
    if expected == 403:
        assert denial["actor"] == f"operator:{caller}-key"
