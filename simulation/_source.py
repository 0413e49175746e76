"""Where a run's sites come from, described so another process can open the same sites.

Flower runs each ClientApp in a worker process (a Ray actor, or a SuperNode on a gNB
host), so a site's data is never shipped over the wire: every worker rebuilds it from a
small JSON spec: a generator config, or a directory of per-site archives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedge.core import AgentStoreError, read_cell, stored_cells
from fedge.simulation._errors import DataError
from fedge.simulation._generator import GeneratorConfig, SiteGenerator
from fedge.simulation._series import SiteSeries


class SiteSource(Protocol):
    @property
    def num_sites(self) -> int: ...

    def site(self, index: int) -> SiteSeries: ...

    def spec(self) -> dict[str, Any]: ...


class GeneratedSites:
    """Sites from the synthetic generator."""

    def __init__(self, config: GeneratorConfig) -> None:
        self.generator = SiteGenerator(config)

    @property
    def num_sites(self) -> int:
        return self.generator.num_sites

    def site(self, index: int) -> SiteSeries:
        return self.generator.site(index)

    def spec(self) -> dict[str, Any]:
        return {"kind": "generator", **self.generator.config.to_dict()}


class ArchivedSites:
    """Sites stored one ``.npz`` per site, as written by :func:`archive_sites`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        index = directory / "index.json"
        if not index.is_file():
            raise DataError(f"{directory}: not a site archive (no index.json)")
        self._files: list[str] = json.loads(index.read_text())["sites"]

    @property
    def num_sites(self) -> int:
        return len(self._files)

    def site(self, index: int) -> SiteSeries:
        if not 0 <= index < len(self._files):
            raise DataError(f"site index {index} outside 0..{len(self._files) - 1}")
        with np.load(self.directory / self._files[index], allow_pickle=False) as z:
            return SiteSeries(
                site_id=str(z["site_id"]),
                archetype=str(z["archetype"]),
                start=np.datetime64(int(z["start"]), "m"),
                step_minutes=int(z["step_minutes"]),
                values=z["values"],
                anomalies=z["anomalies"],
                events=z["events"] if "events" in z.files else None,
            )

    def spec(self) -> dict[str, Any]:
        return {"kind": "archive", "path": str(self.directory.resolve())}


class AgentStoreSites:
    """The cells an edge agent has stored (its SQLite file), one site per cell.

    The simulation's view of a store (``fedge data`` and replays); a deployed SuperNode
    reads its store through ``fedge.core``'s reader, named by its own node config.
    Without a ``path`` in the spec the store comes from ``$FEDGE_AGENT_STORE``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._cells = stored_cells(path)
        except AgentStoreError as exc:
            raise DataError(str(exc)) from exc

    @property
    def num_sites(self) -> int:
        return len(self._cells)

    def site(self, index: int) -> SiteSeries:
        try:
            stored = read_cell(self.path, index)
        except AgentStoreError as exc:
            raise DataError(str(exc)) from exc
        step_seconds = stored.step_seconds
        return SiteSeries(
            site_id=stored.cell,
            archetype="agent",
            start=np.datetime64(int(stored.steps[0]) * step_seconds, "s").astype("datetime64[m]"),
            step_minutes=step_seconds // 60,
            values=stored.values.astype(np.float32),
            anomalies=np.zeros(len(stored.steps), dtype=np.int8),
        )

    def spec(self) -> dict[str, Any]:
        return {"kind": "agent_store", "path": str(self.path.resolve())}


def archive_sites(sites: Iterable[SiteSeries], directory: Path) -> ArchivedSites:
    directory.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for i, s in enumerate(sites):
        name = f"{i:05d}.npz"
        arrays: dict[str, Any] = {
            "site_id": np.str_(s.site_id),
            "archetype": np.str_(s.archetype),
            "start": np.int64(s.start.astype("datetime64[m]").astype(np.int64)),
            "step_minutes": np.int64(s.step_minutes),
            "values": s.values,
            "anomalies": s.anomalies,
        }
        if s.events is not None:
            arrays["events"] = s.events
        np.savez(directory / name, **arrays)
        names.append(name)
    (directory / "index.json").write_text(json.dumps({"sites": names}))
    return ArchivedSites(directory)


@lru_cache(maxsize=8)
def _open_spec(spec_json: str) -> SiteSource:
    spec = json.loads(spec_json)
    kind = spec.pop("kind", None)
    if kind == "generator":
        try:
            return GeneratedSites(GeneratorConfig(**spec))
        except TypeError as exc:
            raise DataError(f"bad generator spec: {exc}") from exc
    if kind == "archive":
        return ArchivedSites(Path(spec["path"]))
    if kind == "agent_store":
        path = spec.get("path") or os.environ.get("FEDGE_AGENT_STORE")
        if not path:
            raise DataError("agent_store source needs a path or $FEDGE_AGENT_STORE")
        return AgentStoreSites(Path(path))
    raise DataError(f"unknown site source kind {kind!r}")


def open_sites(spec: dict[str, Any] | str) -> SiteSource:
    """Open (and cache per process) the sites a spec describes."""
    text = spec if isinstance(spec, str) else json.dumps(spec, sort_keys=True)
    try:
        return _open_spec(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"site source spec is not JSON: {exc}") from exc
