"""The cluster topology live decisions use: which sites are neighbours.

A strategic decision is made per cluster: its sites take each other's offload, so one
may sleep while the others carry its traffic. A site is in at most one cluster; a site in
none is its own cluster of one. The topology comes from ``FEDGE_COORDINATOR_TOPOLOGY_FILE``
(TOML, read at every start) or ``PUT /api/v1/topology``; either way it is kept in the
database, so every worker process decides with the same one.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import JSON, Column, Engine
from sqlmodel import Field as SQLField
from sqlmodel import Session, SQLModel, col, select

from fedge.coordinator._audit import audit_entry
from fedge.coordinator._errors import InvalidInputError, SettingsError
from fedge.coordinator._schema import Site

__all__ = [
    "Cluster",
    "Topology",
    "TopologyError",
    "TopologyRecord",
    "TopologyStore",
    "clusters_of",
    "load_topology_file",
]

CLUSTER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
HEX_SITE = r"^[0-9a-f]{32}$"
MAX_CLUSTERS = 10_000
MAX_CLUSTER_SITES = 1024


class TopologyError(InvalidInputError):
    """A topology that cannot be put in force (the one in force stays)."""


class Cluster(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=CLUSTER_NAME)
    sites: list[Annotated[str, Field(pattern=HEX_SITE)]] = Field(
        min_length=1, max_length=MAX_CLUSTER_SITES
    )


class Topology(BaseModel):
    """Clusters of neighbouring sites; order inside a cluster is the decision order."""

    model_config = ConfigDict(extra="forbid")

    clusters: list[Cluster] = Field(default_factory=list, max_length=MAX_CLUSTERS)

    @model_validator(mode="after")
    def _disjoint(self) -> Topology:
        names: set[str] = set()
        owner: dict[str, str] = {}
        for cluster in self.clusters:
            if cluster.name in names:
                raise ValueError(f"cluster name {cluster.name!r} is used twice")
            names.add(cluster.name)
            for site in cluster.sites:
                if site in owner:
                    where = "twice" if owner[site] == cluster.name else f"in {owner[site]!r} too"
                    raise ValueError(f"site {site} is in cluster {cluster.name!r} {where}")
                owner[site] = cluster.name
        return self


class TopologyAnswer(Topology):
    updated_at: float | None = None
    updated_by: str | None = None


class TopologyRecord(SQLModel, table=True):
    """The topology in force: one row (id 1), replaced whole."""

    __tablename__ = "topology"

    id: int = SQLField(default=1, primary_key=True)
    clusters: list[dict[str, Any]] = SQLField(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    updated_at: float
    updated_by: str = SQLField(max_length=64)


def load_topology_file(path: Path) -> Topology:
    """The TOML file's ``[[cluster]]`` tables; any problem is a ``SettingsError``."""
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except OSError as exc:
        raise SettingsError(f"topology file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"topology file {path}: not TOML: {exc}") from exc
    unknown = set(raw) - {"cluster"}
    if unknown:
        raise SettingsError(f"topology file {path}: unknown key(s) {sorted(unknown)}")
    try:
        return Topology.model_validate({"clusters": raw.get("cluster", [])})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise SettingsError(f"topology file {path}: {problems}") from exc


def clusters_of(topology: Topology, active: Sequence[str]) -> list[list[str]]:
    """The decision clusters among ``active`` sites: each cluster's active members in its
    order, then every active site in no cluster on its own."""
    live = set(active)
    out: list[list[str]] = []
    placed: set[str] = set()
    for cluster in topology.clusters:
        members = [s for s in cluster.sites if s in live]
        placed.update(cluster.sites)
        if members:
            out.append(members)
    out.extend([s] for s in active if s not in placed)
    return out


class TopologyStore:
    """Reads and replaces the topology row, with its audit entry."""

    def __init__(self, engine: Engine, reader: Engine) -> None:
        self.engine, self.reader = engine, reader

    def get(self) -> TopologyAnswer:
        with Session(self.reader) as session:
            row = session.get(TopologyRecord, 1)
        if row is None:
            return TopologyAnswer()
        return TopologyAnswer(
            clusters=[Cluster.model_validate(c) for c in row.clusters],
            updated_at=row.updated_at,
            updated_by=row.updated_by,
        )

    def topology(self) -> Topology:
        return Topology(clusters=self.get().clusters)

    def put(self, actor: str, topology: Topology, *, enrolled_only: bool = True) -> TopologyAnswer:
        """Replace the topology in one transaction. ``enrolled_only``: every site must be
        enrolled (an operator's edit); a file may name sites before they enroll."""
        named = {s for c in topology.clusters for s in c.sites}
        clusters = [c.model_dump() for c in topology.clusters]
        with Session(self.engine) as session:
            if enrolled_only and named:
                known = set(session.exec(select(Site.id).where(col(Site.id).in_(named))).all())
                unknown = sorted(named - known)
                if unknown:
                    raise TopologyError(
                        f"not enrolled site(s): {', '.join(unknown[:5])}"
                        + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
                    )
            row = session.get(TopologyRecord, 1)
            if row is not None and row.clusters == clusters:
                return self.get()  # unchanged: nothing to write or audit
            if row is None:
                row = TopologyRecord(id=1, clusters=clusters, updated_at=0.0, updated_by="")
            row.clusters, row.updated_at, row.updated_by = clusters, time.time(), actor[:64]
            session.add(row)
            session.add(
                audit_entry(actor, "topology.put", "topology", "ok", f"{len(clusters)} cluster(s)")
            )
            session.commit()
        return self.get()
