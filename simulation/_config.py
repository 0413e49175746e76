"""A simulation run's settings, and the named presets ``fedge simulate --preset`` offers."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import asdict, dataclass, field
from typing import Any

from fedge.simulation._errors import SimulationError
from fedge.simulation._generator import GeneratorConfig

OPT_IN_METHODS = ("fedtrimmedavg", "fedmedian", "krum", "fedavgm")  # not in the default set
FEDERATED_METHODS = ("fedavg", "fedprox", *OPT_IN_METHODS)
TRAINED_METHODS = ("fedavg", "fedprox", "local", "centralized")
# fedavg+cal, the federated model calibrated per site (PERSONALISED_METHODS below), is
# what the agent serves with ``[model] personalise``; the other adaptations are opt-in.
ALL_METHODS = (*TRAINED_METHODS, "fedavg+cal", "seasonal_naive", "persistence")
# The federated model adapted on each site's own days (simulation._personalised), and the
# federated method each adapts: that one must come earlier in the list.
PERSONALISED_METHODS: dict[str, str] = {
    "fedavg+cal": "fedavg",
    "fedavg+ft": "fedavg",
    "fedavg+head": "fedavg",
    "fedavg+ft+cal": "fedavg",
    # Central training, then each site fine-tunes it (simulation._placements).
    "centralized+ft": "centralized",
}
KNOWN_METHODS = (
    *ALL_METHODS,
    *OPT_IN_METHODS,
    *(m for m in PERSONALISED_METHODS if m not in ALL_METHODS),
)


@dataclass(frozen=True)
class SimulationConfig:
    name: str = "demo"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    data_path: str | None = None  # operator import file; replaces the generator
    step_minutes: int | None = None  # import only: override the inferred step
    methods: tuple[str, ...] = ALL_METHODS
    num_rounds: int = 10
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    local_epochs: float = 1.0
    batch_size: int = 64
    learning_rate: float = 1e-3
    proximal_mu: float = 0.01
    # The forecaster the harness trains (docs/simulation.md, "Choosing the forecaster"):
    # chosen on validation days; a deployed run's spec is its run config's `forecast`.
    lookback: int = 36  # three hours: an hour's lookback trails the load at 30-60 min
    hidden: tuple[int, int] = (64, 32)  # 128/64 overfits a site's dozen training days
    # Training weight of an under-forecast. 5 (the cost the report scores) pulls the
    # forecast so high that its RMSE loses to persistence at 30 min; 2 still beats
    # persistence on that cost at every lead time.
    beta_under: float = 2.0
    # Every step from one step to this many minutes ahead, from one model; converted to
    # steps with the series' step (models.horizon_steps), which must divide it.
    horizon_minutes: int = 60
    val_days: int = 2
    test_days: int = 3
    seed: int = 0
    workers: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    # The federated runs on an existing Ray cluster (its GCS "host:port") instead of one
    # this process starts; the baselines stay here (docs/simulation.md, "On a Ray cluster").
    ray_address: str | None = None
    eval_sites: int | None = None  # score the test days of this many sites (None: all)
    # How long a round waits for its sample's replies (FederationPlan.round_timeout): a
    # thousand sites on two workers train for longer than the deployment's ten minutes.
    round_timeout: float = 600.0
    export_onnx: bool = True
    # Compressed, sealed updates (docs/compression.md).
    codec: str = "none"  # "none": plain Flower messages
    downlink_codec: str = "int8"  # the sealed global model sent down (dense codecs)
    residual_decay: float = 1.0
    feedback: str = "tracked"  # error feedback: "tracked" (EF21) or "residual" (classic)
    attacks: str = ""  # e.g. "boosted=0.1"; needs a codec (attacks act on sealed updates)
    attack_baseline: bool = True  # with attacks: rerun each federated method clean
    sweep: tuple[str, ...] = ()  # one extra FedAvg run per codec: the RMSE-vs-bytes plot
    # Central decisions (docs/decisions.md): train and score the DQN/PPO hierarchy too.
    decisions: bool = False
    decision_preset: str = "default"  # training budgets: simulation._decision_train
    # Regional aggregators (docs/hierarchy.md): K regions between the sites and the
    # coordinator (None: flat); the first federated method also runs flat to compare.
    regions: int | None = None
    region_codec: str = ""  # the regional updates' codec ("": the sites')
    hierarchy_baseline: bool = True
    # Compute and bytes of central, edge and central-then-edge training side by side.
    placements: bool = False

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in KNOWN_METHODS]
        if unknown or not self.methods:
            raise SimulationError(
                f"unknown method(s) {unknown or '(none given)'}; choose from {', '.join(KNOWN_METHODS)}"
            )
        from fedge.simulation._comm import check_comm_config

        check_comm_config(self)
        from fedge.simulation._hierarchy import check_hierarchy_config

        check_hierarchy_config(self)
        from fedge.simulation._placements import check_placements_config

        check_placements_config(self)
        if len(set(self.methods)) != len(self.methods):
            raise SimulationError("a method is listed twice")
        for i, m in enumerate(self.methods):
            base = PERSONALISED_METHODS.get(m)
            if base is not None and base not in self.methods[:i]:
                raise SimulationError(f"{m} adapts {base}'s model: list {base} before it")
        if self.workers < 1:
            raise SimulationError(f"workers must be >= 1, got {self.workers}")
        if self.ray_address is not None:
            ray_endpoint(self.ray_address)
        from fedge.models import ForecastSpec, ModelError

        try:
            ForecastSpec(lookback=self.lookback, hidden=self.hidden, beta_under=self.beta_under)
        except ModelError as exc:
            raise SimulationError(f"forecaster: {exc}") from exc
        if self.data_path is None:  # an imported file's step is known once it is read
            self.horizon_steps(self.generator.step_minutes)
        if self.eval_sites is not None and self.eval_sites < 1:
            raise SimulationError("eval_sites must be >= 1")
        if not self.name or any(c in self.name for c in "/\\") or self.name.startswith("."):
            raise SimulationError(f"run name {self.name!r} must be a plain directory name")

    def horizon_steps(self, step_minutes: int) -> int:
        """``horizon_minutes`` in steps of ``step_minutes``; refused when it falls between
        steps or is shorter than one."""
        from fedge.models import ModelError, horizon_steps

        try:
            return horizon_steps(self.horizon_minutes, step_minutes)
        except ModelError as exc:
            raise SimulationError(f"horizon_minutes: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["methods"] = list(self.methods)
        out["sweep"] = list(self.sweep)
        return out


PRESETS: dict[str, SimulationConfig] = {
    # What `make demo` runs: 30 sites (every archetype) with two weeks of history each,
    # all six methods. With three or more weeks per site, a site's own model learns its
    # daily shape well enough to match FedAvg (see docs/simulation.md, "Results").
    "demo": SimulationConfig(name="demo", generator=GeneratorConfig(num_sites=30, days=14)),
    # The scale check: 1,000 registered sites, 5% sampled per round, federated only.
    "sites_1000": SimulationConfig(
        name="sites_1000",
        generator=GeneratorConfig(num_sites=1000, days=21),
        methods=("fedavg",),
        num_rounds=3,
        fraction_train=0.05,
        fraction_evaluate=0.02,
        eval_sites=50,
        export_onnx=False,
    ),
    # Ten and a hundred times that, with compressed, sealed updates (int8 deltas, tracked
    # error feedback): what the registered count costs when only the sample trains
    # (docs/simulation.md, "Scale"). Two workers: one per core of the reference host.
    "sites_10000": SimulationConfig(
        name="sites_10000",
        generator=GeneratorConfig(num_sites=10_000, days=21),
        methods=("fedavg",),
        num_rounds=3,
        fraction_train=0.10,
        fraction_evaluate=0.002,  # 20 a round, as the other scale presets
        eval_sites=50,
        codec="int8",
        export_onnx=False,
        round_timeout=7200.0,
    ),
    "sites_100000": SimulationConfig(
        name="sites_100000",
        generator=GeneratorConfig(num_sites=100_000, days=21),
        methods=("fedavg",),
        num_rounds=3,
        fraction_train=0.001,
        fraction_evaluate=0.0002,
        eval_sites=50,
        codec="int8",
        export_onnx=False,
    ),
    # The demo's sites, FedAvg with sealed updates per codec: the RMSE-vs-bytes plot.
    # Tracked feedback (the default) is what makes 3% top-k as accurate as uncompressed.
    "codec_sweep": SimulationConfig(
        name="codec_sweep",
        generator=GeneratorConfig(num_sites=30, days=14),
        methods=("fedavg",),
        codec="int8",
        sweep=(
            "fp32",
            "fp16",
            "int8",
            "int8-channel",
            "int4",
            "topk:0.03",
            "topk+global:0.03",
            "topk+global:0.01",
            "sign",
        ),
        export_onnx=False,
    ),
    # The demo's sites with 10% poisoning (boosted) sites: robust aggregation vs FedAvg.
    "poisoning": SimulationConfig(
        name="poisoning",
        generator=GeneratorConfig(num_sites=30, days=14),
        methods=("fedavg", "fedtrimmedavg", "fedmedian", "krum"),
        codec="int8",
        attacks="boosted=0.1",
        export_onnx=False,
    ),
    # What real LTE cells look like and the demo does not (docs/simulation.md, "The hard
    # preset"): 25 sites with 7 to 21 days each (the shortest keep 2 training days),
    # traffic two orders of magnitude apart, heavy-tailed bursts, cells asleep at night,
    # counter gaps, and match-day surges on the calendar of about a third of the sites.
    "hard": SimulationConfig(
        name="hard",
        generator=GeneratorConfig(
            num_sites=25,
            days=21,
            min_days=7,
            scale_spread=2.0,
            bursts_per_day=3.0,
            idle_night_share=0.3,
            gaps_per_week=0.5,
            surge_share=0.35,
            surges_per_week=1.5,
        ),
    ),
    # The demo's sites behind 10 regional aggregators, against the same run flat: bytes
    # per tier, rounds to the target validation loss, RMSE (docs/hierarchy.md).
    "hierarchy": SimulationConfig(
        name="hierarchy",
        generator=GeneratorConfig(num_sites=30, days=14),
        methods=("fedavg",),
        codec="int8",
        regions=10,
        region_codec="topk+global:0.1",
        export_onnx=False,
    ),
    # The demo's sites trained centrally, at the edge, and centrally then fine-tuned at
    # the edge: compute and bytes of each (docs/hierarchy.md, "Where training runs").
    "placements": SimulationConfig(
        name="placements",
        generator=GeneratorConfig(num_sites=30, days=14),
        methods=("fedavg", "centralized", "centralized+ft"),
        codec="int8",
        placements=True,
        export_onnx=False,
    ),
    # A minute-long end-to-end run for tests and first contact.
    "smoke": SimulationConfig(
        name="smoke",
        generator=GeneratorConfig(num_sites=5, days=8),
        num_rounds=2,
        val_days=1,
        test_days=1,
        decision_preset="smoke",
    ),
}


def preset(name: str) -> SimulationConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise SimulationError(
            f"unknown preset {name!r}; choose from {', '.join(PRESETS)}"
        ) from None


_ENDPOINT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)):(?P<port>[0-9]{1,5})$"
)


def ray_endpoint(address: str) -> tuple[str, int]:
    """A Ray cluster's GCS address, ``host:port`` or ``[v6]:port``, as (host, port);
    anything else (a scheme, ``auto``, no port, port 0) is refused by name."""
    match = _ENDPOINT.match(address)
    port = int(match["port"]) if match else 0
    if match is None or not 0 < port < 65536:
        raise SimulationError(
            f"--ray-address: the cluster's head as host:port (`ray start --head --port P` "
            f"prints it), got {address!r}"
        )
    return match["v6"] or match["host"], port


def probe_ray(address: str) -> None:
    """Refuse a cluster address nothing answers on, before any data is read: joining one
    that is down would otherwise retry for a minute and fail inside Ray."""
    host, port = ray_endpoint(address)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise SimulationError(
            f"no Ray cluster answers at {address}: {exc.strerror or exc} (start one with "
            "`ray start --head --port PORT`)"
        ) from exc
