"""The cluster topology: validated on PUT and from its file, a bad one never in force."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fedge.coordinator import Coordinator, CoordinatorSettings, Role, SettingsError
from fedge.coordinator._topology import Topology, clusters_of, load_topology_file
from fedge.coordinator.api import create_app
from tests.coordinator.helpers import Fleet

A, B, C = "a" * 32, "b" * 32, "c" * 32


def _put(fleet: Fleet, body: object, role: Role = Role.ADMIN) -> tuple[int, object]:
    answer = fleet.client.put("/api/v1/topology", json=body, headers=fleet.as_(role))
    return answer.status_code, answer.json()


def test_admins_replace_the_topology_viewers_read_it(fleet: Fleet) -> None:
    one, two, three = (fleet.enroll().site_id.hex() for _ in range(3))
    empty = fleet.client.get("/api/v1/topology", headers=fleet.as_(Role.VIEWER))
    assert empty.status_code == 200 and empty.json()["clusters"] == []
    body = {"clusters": [{"name": "north", "sites": [one, two]}, {"name": "s-1", "sites": [three]}]}
    assert _put(fleet, body, Role.OPERATOR)[0] == 403
    status, answer = _put(fleet, body)
    assert status == 200 and isinstance(answer, dict)
    assert answer["clusters"] == body["clusters"] and answer["updated_by"]
    read = fleet.client.get("/api/v1/topology", headers=fleet.as_(Role.VIEWER)).json()
    assert read["clusters"] == body["clusters"]
    log = fleet.client.get("/api/v1/audit", headers=fleet.as_(Role.ADMIN)).json()
    assert any(e["action"] == "topology.put" for e in log)


def test_a_bad_topology_is_422_and_leaves_the_one_in_force(fleet: Fleet) -> None:
    one, two = (fleet.enroll().site_id.hex() for _ in range(2))
    good = {"clusters": [{"name": "north", "sites": [one, two]}]}
    assert _put(fleet, good)[0] == 200
    bad = {
        "unknown site": [{"name": "north", "sites": [one, "f" * 32]}],
        "in two clusters": [{"name": "a", "sites": [one]}, {"name": "b", "sites": [one, two]}],
        "twice in one": [{"name": "a", "sites": [one, one]}],
        "empty cluster": [{"name": "a", "sites": []}],
        "bad name": [{"name": "no spaces", "sites": [one]}],
        "long name": [{"name": "n" * 65, "sites": [one]}],
        "same name": [{"name": "a", "sites": [one]}, {"name": "a", "sites": [two]}],
        "bad site id": [{"name": "a", "sites": ["ABC"]}],
        "extra field": [{"name": "a", "sites": [one], "size": 1}],
    }
    for why, clusters in bad.items():
        status, answer = _put(fleet, {"clusters": clusters})
        assert status == 422, (why, answer)
    assert _put(fleet, {"cluster": []})[0] == 422
    read = fleet.client.get("/api/v1/topology", headers=fleet.as_(Role.VIEWER)).json()
    assert read["clusters"] == good["clusters"]


def test_clusters_of_active_sites_and_the_rest_alone() -> None:
    topology = Topology.model_validate(
        {"clusters": [{"name": "n", "sites": [A, B]}, {"name": "gone", "sites": [C]}]}
    )
    d = "d" * 32
    assert clusters_of(topology, [d, B, A]) == [[A, B], [d]]
    assert clusters_of(Topology(), [A, B]) == [[A], [B]]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[cluster]\nname = ", "not TOML"),
        (
            f'[[cluster]]\nname = "n"\nsites = ["{A}"]\n[[cluster]]\nname = "m"\nsites = ["{A}"]\n',
            "too",
        ),
        ('[[cluster]]\nname = "n"\nsites = []\n', "sites"),
        (f'[[cluster]]\nname = "bad name"\nsites = ["{A}"]\n', "name"),
        (f'[[clusters]]\nname = "n"\nsites = ["{A}"]\n', "unknown key"),
    ],
)
def test_a_bad_topology_file_is_a_settings_error(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "topology.toml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=problem):
        load_topology_file(path)


def test_an_unreadable_topology_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="topology file"):
        load_topology_file(tmp_path / "missing.toml")
    locked = tmp_path / "locked.toml"
    locked.write_text("")
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root reads it anyway
        return
    with pytest.raises(SettingsError, match="topology file"):
        load_topology_file(locked)


def _settings(tmp_path: Path, identity_file: Path, topology: Path) -> CoordinatorSettings:
    key = tmp_path / "coordinator.key"
    shutil.copy(identity_file, key)
    return CoordinatorSettings(
        database_url=f"sqlite:///{tmp_path / 'coordinator.db'}",
        model_store=tmp_path / "models",
        identity_file=key,
        topology_file=topology,
    )


def test_the_topology_file_is_put_in_force_at_start(tmp_path: Path, identity_file: Path) -> None:
    path = tmp_path / "topology.toml"
    path.write_text(f'[[cluster]]\nname = "north"\nsites = ["{A}", "{B}"]\n')
    settings = _settings(tmp_path, identity_file, path)
    with TestClient(create_app(settings)) as client:
        fleet = Fleet.with_roles(client, [Role.VIEWER])
        read = client.get("/api/v1/topology", headers=fleet.as_(Role.VIEWER)).json()
        assert read["clusters"] == [{"name": "north", "sites": [A, B]}]
        assert read["updated_by"] == "settings"
    path.write_text("not = [toml")
    with pytest.raises(SettingsError, match="not TOML"):
        Coordinator(settings)
