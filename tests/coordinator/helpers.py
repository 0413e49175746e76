"""Test helpers: API keys per role, a real enrollment, small real ONNX models."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from fastapi.testclient import TestClient

from fedge.coordinator import DEV_ADMIN_KEY, Role
from fedge.security import SiteIdentity, SitePublicKeys, enrollment_request, prove_possession

ADMIN = {"X-API-Key": DEV_ADMIN_KEY}


def onnx_model(tag: str, *, metadata: bool = True, runs: bool = True) -> bytes:
    """A tiny fedge forecaster that ONNX Runtime loads and runs (the window's mean over time
    times a weight matrix), with the default forecast spec in its metadata; ``tag`` makes
    its bytes unique. ``metadata=False``: a valid ONNX model that is no fedge forecaster;
    ``runs=False``: one that loads (its input's sizes left symbolic) but whose weights do
    not fit the window, so it fails on any input."""
    import json

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fedge.models import N_TARGETS, ForecastSpec

    spec = ForecastSpec()
    rows = spec.n_features if runs else spec.n_features + 1
    weights = np.full((rows, N_TARGETS), 0.01, dtype=np.float32)
    window = [spec.lookback, spec.n_features] if runs else ["lookback", "features"]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["kpi_window"], ["mean"], axes=[1], keepdims=1),
            helper.make_node("MatMul", ["mean", "w"], ["forecast"]),
        ],
        f"g-{tag}",
        [helper.make_tensor_value_info("kpi_window", TensorProto.FLOAT, ["batch", *window])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", "h", "t"])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        entry = model.metadata_props.add()
        entry.key, entry.value = "fedge.forecast_spec", json.dumps(spec.to_dict())
    onnx.checker.check_model(model)
    blob: bytes = model.SerializeToString()
    return blob


@dataclass
class Fleet:
    client: TestClient
    keys: dict[Role, str] = field(default_factory=dict)

    @classmethod
    def with_roles(cls, client: TestClient, roles: list[Role]) -> Fleet:
        fleet = cls(client)
        for role in roles:
            answer = client.post(
                "/api/v1/keys",
                json={"name": f"{role.value}-key", "role": role.value},
                headers=ADMIN,
            )
            assert answer.status_code == 201, answer.text
            fleet.keys[role] = answer.json()["key"]
        return fleet

    def as_(self, role: Role) -> dict[str, str]:
        return {"X-API-Key": self.keys[role]}

    def token(self, ttl: float = 600.0) -> str:
        answer = self.client.post(
            "/api/v1/enrollment/tokens", json={"ttl_seconds": ttl}, headers=self.as_(Role.OPERATOR)
        )
        assert answer.status_code == 201, answer.text
        token: str = answer.json()["token"]
        return token

    def authority(self) -> SitePublicKeys:
        body = self.client.get("/api/v1/enrollment/authority").json()
        return SitePublicKeys.from_bytes(base64.b64decode(body["public_keys_base64"]))

    def begin(self, identity: SiteIdentity, token: str) -> bytes:
        request = enrollment_request(identity, token, self.authority())
        answer = self.client.post(
            "/api/v1/enrollment/begin", json={"request_base64": base64.b64encode(request).decode()}
        )
        assert answer.status_code == 200, answer.text
        return base64.b64decode(answer.json()["challenge_base64"])

    def enroll(
        self, identity: SiteIdentity | None = None, archetype: str = "urban", region: str = "north"
    ) -> SiteIdentity:
        identity = identity or SiteIdentity.generate()
        challenge = self.begin(identity, self.token())
        answer = self.client.post(
            "/api/v1/enrollment/complete",
            json={
                "site_id": identity.site_id.hex(),
                "proof_base64": base64.b64encode(prove_possession(identity, challenge)).decode(),
                "archetype": archetype,
                "region": region,
            },
        )
        assert answer.status_code == 201, answer.text
        return identity

    def upload(self, tag: str, parent: int | None = None, role: Role = Role.OPERATOR) -> int:
        answer = self.client.post(
            "/api/v1/models",
            json={
                "onnx_base64": base64.b64encode(onnx_model(tag)).decode(),
                "parent_id": parent,
                "metrics": {"rmse": 0.5},
                "note": tag,
            },
            headers=self.as_(role),
        )
        assert answer.status_code == 201, answer.text
        model_id: int = answer.json()["id"]
        return model_id
