"""Where training runs: central, at the edge (federated), or central then fine-tuned at the edge.

``fedge simulate --placements`` (or the ``placements`` preset) runs ``fedavg``,
``centralized`` and ``centralized+ft`` (the centralized model fine-tuned on each site's
own days, ``simulation._personalised``) and puts their compute and bytes side by side:

* compute: CPU-seconds of the whole process tree while the method ran, sampled from
  the operating system (:class:`CpuMeter`): this process's threads and every child, so
  a federated run counts its Ray workers (the sites' training) and Ray itself;
* bytes: central training ships every site's raw KPIs to the centre, counted as the
  operator import format (CSV, ``docs/data-format.md``) and gzipped, plus the model sent
  back to every site (its downlink payload); federated training counts its sealed
  Flower messages both ways (``comm``); central + fine-tuning ships the raw KPIs and the
  model down, and its compute adds the sites' fine-tuning.
"""

from __future__ import annotations

import gzip
import threading
import time
from typing import TYPE_CHECKING, Any

import psutil

from fedge.federation import downlink_spec, encode
from fedge.models import Weights
from fedge.simulation._errors import SimulationError

if TYPE_CHECKING:
    from fedge.simulation._config import SimulationConfig
    from fedge.simulation._source import SiteSource

PLACEMENT_METHODS = ("fedavg", "centralized", "centralized+ft")
SAMPLE_S = 0.25


def check_placements_config(config: SimulationConfig) -> None:
    if not config.placements:
        return
    missing = [m for m in PLACEMENT_METHODS if m not in config.methods]
    if missing:
        raise SimulationError(
            f"--placements compares {', '.join(PLACEMENT_METHODS)}: add {', '.join(missing)} "
            "to --methods"
        )
    if config.codec == "none":
        raise SimulationError(
            "--placements counts the federated run's bytes on sealed messages: give --codec"
        )


class CpuMeter:
    """CPU-seconds (user + system) of this process and all its descendants over a span.

    Children are sampled every ``SAMPLE_S`` while they live (a Ray worker is gone by the
    time the run returns); each one's last reading counts, less what it had used before
    the span began."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._seen: dict[int, float] = {}
        self._base: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._own = 0.0

    def _sample(self) -> None:
        for child in self._proc.children(recursive=True):
            try:
                t = child.cpu_times()
            except psutil.Error:
                continue
            self._seen[child.pid] = max(self._seen.get(child.pid, 0.0), t.user + t.system)

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def start(self) -> CpuMeter:
        self._sample()
        self._base = dict(self._seen)
        t = self._proc.cpu_times()
        self._own = t.user + t.system
        self._thread.start()
        return self

    def stop(self) -> float:
        self._sample()
        self._stop.set()
        self._thread.join()
        t = self._proc.cpu_times()
        children = sum(v - self._base.get(pid, 0.0) for pid, v in self._seen.items())
        return round(float(t.user + t.system - self._own + children), 2)


def raw_kpi_bytes(source: SiteSource) -> dict[str, int]:
    """Every site's KPI history as the centre would receive it: the import format's CSV
    rows, and the same gzipped."""
    from fedge.simulation._kpi_file import _frame

    plain = packed = 0
    for i in range(source.num_sites):
        text = _frame(source.site(i)).to_csv(index=False, float_format="%.4f").encode()
        plain += len(text)
        packed += len(gzip.compress(text, compresslevel=6))
    return {"csv": plain, "csv_gzip": packed}


def placements_section(
    config: SimulationConfig,
    source: SiteSource,
    methods: dict[str, dict[str, Any]],
    comm: dict[str, Any] | None,
    central_weights: Weights,
) -> dict[str, Any]:
    """report.json's ``placements``: compute and bytes of each placement, side by side.

    ``methods`` holds the report's per-method figures (``rmse``, ``cpu_s``, ``seconds``)."""
    t0 = time.perf_counter()
    raw = raw_kpi_bytes(source)
    model = len(encode(central_weights, downlink_spec(config.downlink_codec)))
    model_down = model * source.num_sites
    c = (comm or {}).get("comm", {})
    fed, central, tuned = (methods[m] for m in PLACEMENT_METHODS)
    rows = {
        "central": {
            "methods": ["centralized"],
            "rmse": central["rmse"],
            "cpu_s": central["cpu_s"],
            "wall_s": central["seconds"],
            "bytes_to_centre": raw["csv_gzip"],
            "bytes_to_sites": model_down,
        },
        "edge": {
            "methods": ["fedavg"],
            "rmse": fed["rmse"],
            "cpu_s": fed["cpu_s"],
            "wall_s": fed["seconds"],
            "bytes_to_centre": c.get("bytes_up_total"),
            "bytes_to_sites": c.get("bytes_down_total"),
        },
        "central_then_edge_ft": {
            "methods": ["centralized", "centralized+ft"],
            "rmse": tuned["rmse"],
            "cpu_s": round(central["cpu_s"] + tuned["cpu_s"], 2),
            "wall_s": round(central["seconds"] + tuned["seconds"], 2),
            "bytes_to_centre": raw["csv_gzip"],
            "bytes_to_sites": model_down,
        },
    }
    return {
        "sites": source.num_sites,
        "raw_kpi_bytes": raw,
        "model_payload_bytes": model,
        "downlink_codec": config.downlink_codec,
        "placements": rows,
        "measure_s": round(time.perf_counter() - t0, 2),
    }


def _cell(key: str, v: object) -> str:
    if isinstance(v, float) and key == "rmse":
        return f"{v:.4f}"
    return f"{v:,}" if isinstance(v, int | float) else "-"


def placements_html(report: dict[str, Any]) -> str:
    p = report.get("placements")
    if not p:
        return ""
    keys = ("rmse", "cpu_s", "wall_s", "bytes_to_centre", "bytes_to_sites")
    rows = "".join(
        f"<tr><td>{name.replace('_', ' ')}</td>"
        + "".join(f"<td>{_cell(k, row.get(k))}</td>" for k in keys)
        + "</tr>"
        for name, row in p["placements"].items()
    )
    return (
        "<h2>Where training runs</h2><p>CPU-seconds of the whole process tree while each "
        "ran (Ray workers included); raw KPIs counted as the import format's CSV, "
        f"gzipped ({p['raw_kpi_bytes']['csv']:,} B plain); the model down is its "
        f"{p['downlink_codec']} payload ({p['model_payload_bytes']:,} B) per site.</p>"
        "<table><tr><th>placement</th><th>RMSE</th><th>CPU s</th><th>wall s</th>"
        "<th>bytes to the centre</th><th>bytes to the sites</th></tr>" + rows + "</table>"
    )
