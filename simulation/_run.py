"""``fedge simulate``: every method on the same sites, scored on the same held-out days."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from fedge.core import TARGET_INDEX
from fedge.federation import FederationPlan, RoundRecord
from fedge.models import ForecastSpec, LoadForecaster, Weights, predict, set_weights
from fedge.simulation._baselines import actuals, persistence, seasonal
from fedge.simulation._comm import attacks_json, comm_plan
from fedge.simulation._config import (
    FEDERATED_METHODS,
    PERSONALISED_METHODS,
    SimulationConfig,
    probe_ray,
)
from fedge.simulation._errors import SimulationError
from fedge.simulation._methods import CENTRAL_MAX_EPOCHS, LocalModel
from fedge.simulation._metrics import (
    SiteScore,
    pool_scores,
    report_horizons,
    score_site,
    score_site_by_horizon,
)
from fedge.simulation._placements import CpuMeter
from fedge.simulation._pm_import import read_site_data
from fedge.simulation._site_task import SiteTask, site_task
from fedge.simulation._source import GeneratedSites, SiteSource, archive_sites

PLOT_DAYS = 1


class RunProgress:
    """What the harness reports while it works; the CLI draws it with rich."""

    def start(self, task: str, total: int) -> None: ...

    def advance(self, task: str) -> None: ...


@dataclass
class MethodResult:
    scores: list[SiteScore] = field(default_factory=list)  # every horizon step pooled
    by_step: dict[int, list[SiteScore]] = field(default_factory=dict)  # report horizons
    rounds: list[RoundRecord] = field(default_factory=list)
    seconds: float = 0.0
    site_rounds: int = 0
    comm: dict[str, Any] | None = None  # bytes and rejections of a sealed run
    cpu_s: float = 0.0  # CPU-seconds of the process tree (simulation._placements.CpuMeter)
    # trained methods: the round (epoch, for centralized) kept, and the losses per round
    best_round: int | None = None
    losses: list[dict[str, float | int | None]] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)  # local: sites per kept round

    def add(self, scored: tuple[SiteScore, dict[int, SiteScore]]) -> None:
        whole, per_step = scored
        self.scores.append(whole)
        for step, score in per_step.items():
            self.by_step.setdefault(step, []).append(score)


@dataclass
class RunResult:
    report: dict[str, Any]
    run_dir: Path
    plot_series: dict[str, dict[str, NDArray[np.float64]]]


def open_source(config: SimulationConfig, run_dir: Path) -> tuple[SiteSource, dict[str, Any]]:
    if config.data_path is None:
        return GeneratedSites(config.generator), {
            "source": "generator",
            **config.generator.to_dict(),
        }
    # A folder is 3GPP PM XML, a file the CSV/Parquet import format (docs/data-format.md).
    sites, imported = read_site_data(Path(config.data_path), config.step_minutes)
    archive = archive_sites(sites, run_dir / "sites")
    return archive, {
        "path": str(Path(config.data_path).resolve()),
        "num_sites": len(sites),
        "step_minutes": sites[0].step_minutes,
        **imported,
    }


def step_minutes(config: SimulationConfig, source: SiteSource) -> int:
    """The sites' step: the generator's, or the imported file's (one step for all sites)."""
    if config.data_path is None:
        return config.generator.step_minutes
    return source.site(0).step_minutes


def make_plan(config: SimulationConfig, source: SiteSource, strategy: str) -> FederationPlan:
    horizon = config.horizon_steps(step_minutes(config, source))
    return FederationPlan(
        data_spec=json.dumps(source.spec(), sort_keys=True),
        strategy=strategy,
        num_rounds=config.num_rounds,
        fraction_train=config.fraction_train,
        fraction_evaluate=config.fraction_evaluate,
        local_epochs=config.local_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        proximal_mu=config.proximal_mu,
        seed=config.seed,
        val_days=config.val_days,
        test_days=config.test_days,
        forecast=_spec(config, horizon),
        codec=config.codec,
        downlink_codec=config.downlink_codec,
        residual_decay=config.residual_decay,
        feedback=config.feedback,
        attacks=attacks_json(config, source.num_sites),
        regions=config.regions or 0,
        region_codec=config.region_codec,
        round_timeout=config.round_timeout,
    )


def _spec(config: SimulationConfig, horizon: int) -> ForecastSpec:
    """The forecaster of the config (checked by it) for ``horizon`` steps."""
    return ForecastSpec(
        lookback=config.lookback,
        horizon=horizon,
        hidden=config.hidden,
        beta_under=config.beta_under,
    )


def eval_indices(num_sites: int, eval_sites: int | None) -> list[int]:
    if eval_sites is None or eval_sites >= num_sites:
        return list(range(num_sites))
    return sorted({int(i) for i in np.linspace(0, num_sites - 1, eval_sites)})


def run(config: SimulationConfig, runs_dir: Path, progress: RunProgress | None = None) -> RunResult:
    progress = progress or RunProgress()
    started = time.perf_counter()
    if config.ray_address is not None:
        probe_ray(config.ray_address)
    run_dir = runs_dir / config.name
    run_dir.mkdir(parents=True, exist_ok=True)
    source, data_info = open_source(config, run_dir)
    plan = make_plan(config, source, "fedavg")
    horizon = plan.forecast.horizon
    steps = [k for _, k in report_horizons(horizon, step_minutes(config, source))]
    indices = eval_indices(source.num_sites, config.eval_sites)
    tasks = {i: _task(plan, i) for i in indices}
    results: dict[str, MethodResult] = {}
    weights: dict[str, Weights] = {}

    for method in config.methods:
        t0 = time.perf_counter()
        meter = CpuMeter().start()
        res = MethodResult()
        if method in FEDERATED_METHODS:
            from fedge.simulation._federated import run_federated

            fplan = comm_plan(make_plan(config, source, method), run_dir, method)
            progress.start(method, fplan.num_rounds)
            fed = run_federated(
                fplan, source.num_sites, config.workers, _ticker(progress, method),
                ray_address=config.ray_address,
            )  # fmt: skip
            weights[method] = fed.outcome.weights
            res.comm = fed.outcome.comm
            res.rounds, res.site_rounds = fed.outcome.rounds, fed.site_rounds
            res.best_round = fed.outcome.best_round
            res.losses = [
                {"round": r.round, "train_loss": r.train_loss, "val_loss": r.val_loss}
                for r in fed.outcome.rounds
            ]
            for scored in _score_model(fed.outcome.weights, plan, tasks, steps):
                res.add(scored)
        elif method == "local":
            from fedge.simulation._methods import train_local

            progress.start(method, len(indices))
            trained = train_local(plan, indices, config.workers, lambda: progress.advance("local"))
            for i in indices:
                res.add(_score(tasks[i], trained[i].forecast, steps, scaled=True))
            res.best_round, res.losses, res.kept = _local_rounds([trained[i] for i in indices])
        elif method in PERSONALISED_METHODS:  # the federated model adapted per site
            from fedge.simulation._personalised import personalise

            progress.start(method, len(indices))
            base, tick = PERSONALISED_METHODS[method], partial(progress.advance, method)
            adapted = personalise(method, weights[base], plan, tasks, tick)
            for i in indices:
                res.add(_score(tasks[i], adapted[i], steps, scaled=True))
        elif method == "centralized":
            from fedge.simulation._methods import train_centralized

            progress.start(method, CENTRAL_MAX_EPOCHS)
            central = train_centralized(
                plan, source.num_sites, config.workers, lambda: progress.advance("centralized")
            )
            weights[method] = central.weights
            res.best_round, res.losses = central.best_epoch, central.history
            for scored in _score_model(central.weights, plan, tasks, steps):
                res.add(scored)
        elif method == "persistence":
            for t in tasks.values():
                fc = persistence(t.series.values, t.prepared.test_ends, horizon, TARGET_INDEX)
                res.add(_score(t, fc, steps))
        else:  # seasonal_naive
            for t in tasks.values():
                res.add(_score(t, _seasonal_naive(t, horizon), steps))
        res.seconds = time.perf_counter() - t0
        res.cpu_s = meter.stop()
        results[method] = res

    artifacts: dict[str, str] = {}
    if config.export_onnx and "fedavg" in weights:
        from fedge.models import export_onnx

        model = LoadForecaster(plan.forecast)
        set_weights(model, weights["fedavg"])
        artifacts["fedavg_onnx"] = str(export_onnx(model, run_dir / "fedavg.onnx"))

    comm = _comm_sections(config, source, run_dir, results, plan, tasks, progress)
    if config.regions is not None:
        comm["hierarchy"] = _hierarchy(config, source, run_dir, results, plan, tasks, progress)
    report_methods: dict[str, dict[str, Any]] = {
        m: {"rmse": pool_scores(r.scores)["rmse"], "cpu_s": r.cpu_s, "seconds": r.seconds}
        for m, r in results.items()
    }
    if config.placements:
        from fedge.simulation._placements import placements_section

        comm["placements"] = placements_section(
            config, source, report_methods, results["fedavg"].comm, weights["centralized"]
        )
    if config.decisions:
        from fedge.simulation._decision_eval import run_decisions

        comm["decisions"] = run_decisions(config, source, run_dir, progress)
    wall = time.perf_counter() - started
    horizons = report_horizons(horizon, step_minutes(config, source))
    report = _report(config, data_info, results, indices, wall, artifacts, plan, horizons)
    report.update(comm)
    plot_series = _plot_series(tasks, weights, plan, config)
    return RunResult(report, run_dir, plot_series)


def _comm_sections(
    config: SimulationConfig,
    source: SiteSource,
    run_dir: Path,
    results: dict[str, MethodResult],
    plan: FederationPlan,
    tasks: dict[int, SiteTask],
    progress: RunProgress,
) -> dict[str, Any]:
    from fedge.simulation._comm import comm_sections
    from fedge.simulation._federated import run_federated

    outcomes = {
        m: (pool_scores(r.scores)["rmse"], r.comm)
        for m, r in results.items()
        if m in FEDERATED_METHODS
    }
    return comm_sections(
        config,
        source.num_sites,
        lambda m: make_plan(config, source, m),
        run_dir,
        outcomes,
        lambda p: (
            run_federated(
                p, source.num_sites, config.workers, ray_address=config.ray_address
            ).outcome
        ),
        lambda o: pool_scores(s for s, _ in _score_model(o.weights, plan, tasks, [])),
        progress,
    )


def _hierarchy(
    config: SimulationConfig,
    source: SiteSource,
    run_dir: Path,
    results: dict[str, MethodResult],
    plan: FederationPlan,
    tasks: dict[int, SiteTask],
    progress: RunProgress,
) -> dict[str, Any]:
    """The first federated method's regional run against the same run flat."""
    from dataclasses import replace

    from fedge.simulation._federated import run_federated
    from fedge.simulation._hierarchy import Arm, hierarchy_section

    method = next(m for m in results if m in FEDERATED_METHODS)
    res = results[method]
    hier = Arm(pool_scores(res.scores)["rmse"], res.rounds, res.comm or {}, res.seconds)

    def flat() -> Arm:
        fplan = replace(make_plan(config, source, method), regions=0, region_codec="")
        t0 = time.perf_counter()
        fed = run_federated(
            comm_plan(fplan, run_dir, f"flat-{method}"), source.num_sites, config.workers,
            ray_address=config.ray_address,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        scores = pool_scores(s for s, _ in _score_model(fed.outcome.weights, plan, tasks, []))
        return Arm(scores["rmse"], fed.outcome.rounds, fed.outcome.comm or {}, seconds)

    return hierarchy_section(config, method, hier, flat, progress)


def _ticker(progress: RunProgress, task: str) -> Callable[[int], None]:
    return lambda _round: progress.advance(task)


def _task(plan: FederationPlan, index: int) -> SiteTask:
    try:
        return site_task(plan.data_spec, index, plan.forecast, plan.val_days, plan.test_days)
    except Exception as exc:
        from fedge import FedgeError

        if isinstance(exc, FedgeError):
            raise SimulationError(f"site {index}: {exc}") from exc
        raise


def _score(
    task: SiteTask,
    forecast: NDArray[np.floating[Any]],
    steps: list[int],
    scaled: bool = False,
) -> tuple[SiteScore, dict[int, SiteScore]]:
    """The site's test-day score over the whole horizon, and at each of ``steps`` alone."""
    p = task.prepared
    fc = p.scaler.inverse(forecast, TARGET_INDEX) if scaled else forecast
    actual = actuals(task.series.values, p.test_ends, p.y_test.shape[1], TARGET_INDEX)
    sid, arch, rng = task.series.site_id, task.series.archetype, p.scaler.range[list(TARGET_INDEX)]
    return (
        score_site(sid, arch, actual, fc, rng),
        score_site_by_horizon(sid, arch, actual, fc, rng, steps),
    )


def _score_model(
    weights: Weights, plan: FederationPlan, tasks: dict[int, SiteTask], steps: list[int]
) -> list[tuple[SiteScore, dict[int, SiteScore]]]:
    torch.set_num_threads(1)
    model = LoadForecaster(plan.forecast)
    set_weights(model, weights)
    return [
        _score(t, predict(model, t.prepared.x_test), steps, scaled=True) for t in tasks.values()
    ]


def _local_rounds(
    trained: list[LocalModel],
) -> tuple[int | None, list[dict[str, float | int | None]], dict[str, int]]:
    """Each local model keeps its own best round: the most common one, the sites per kept
    round, and the sites' mean losses per round."""
    if not trained or not trained[0].history:
        return None, [], {}
    kept = [t.best_round for t in trained]
    counts = {str(r): kept.count(r) for r in sorted(set(kept))}
    best = max(sorted(set(kept)), key=kept.count)
    mean: list[dict[str, float | int | None]] = []
    for r in range(len(trained[0].history)):
        row: dict[str, float | int | None] = {"round": r + 1}
        for key in ("train_loss", "val_loss"):
            vals = [float(v) for t in trained if (v := t.history[r].get(key)) is not None]
            row[key] = float(np.mean(vals)) if vals else None
        mean.append(row)
    return best, mean, counts


def _seasonal_naive(task: SiteTask, horizon: int) -> NDArray[np.float64]:
    """Same time a day or a week earlier, whichever scored better on the site's validation days."""
    values, p = task.series.values, task.prepared
    spd = task.series.steps_per_day
    best, best_err = spd, np.inf
    for period in (spd, 7 * spd):
        if p.val_ends.min() + 1 - period < 0:
            continue
        val_fc = seasonal(values, p.val_ends, horizon, TARGET_INDEX, period)
        val_act = actuals(values, p.val_ends, horizon, TARGET_INDEX)
        err = float(np.mean(((val_fc - val_act) / p.scaler.range[list(TARGET_INDEX)]) ** 2))
        if err < best_err:
            best, best_err = period, err
    return seasonal(values, p.test_ends, horizon, TARGET_INDEX, best)


BY_HORIZON_KEYS = ("rmse", "mae", "r2", "underprovision_rate", "asymmetric_cost")


def _by_horizon(
    results: dict[str, MethodResult], horizons: list[tuple[int, int]], step: int
) -> dict[str, Any]:
    """Per report lead time: the horizon step scored and every method's figures there."""
    out: dict[str, Any] = {}
    for minutes, k in horizons:
        methods = {}
        for name, res in results.items():
            pooled = pool_scores(res.by_step[k])
            methods[name] = {key: pooled[key] for key in BY_HORIZON_KEYS}
        out[str(minutes)] = {"step": k, "minutes": k * step, "methods": methods}
    return out


def _report(
    config: SimulationConfig,
    data_info: dict[str, Any],
    results: dict[str, MethodResult],
    indices: list[int],
    wall: float,
    artifacts: dict[str, str],
    plan: FederationPlan,
    horizons: list[tuple[int, int]],
) -> dict[str, Any]:
    methods: dict[str, Any] = {}
    for name, res in results.items():
        pooled = pool_scores(res.scores)
        by_arch: dict[str, Any] = {}
        for arch in sorted({s.archetype for s in res.scores}):
            sub = pool_scores([s for s in res.scores if s.archetype == arch])
            by_arch[arch] = {
                k: sub[k] for k in ("rmse", "mae", "r2", "underprovision_rate", "sites")
            }
        methods[name] = {**pooled, "by_archetype": by_arch, "seconds": round(res.seconds, 2)}
        methods[name]["cpu_s"] = res.cpu_s
        if res.losses:
            methods[name]["best_round"] = res.best_round
            methods[name]["loss_by_round"] = res.losses
        if res.kept:
            methods[name]["best_round_sites"] = res.kept
    fed_rounds = {m: [r.__dict__ for r in res.rounds] for m, res in results.items() if res.rounds}
    primary = next(iter(fed_rounds.values()), [])
    fed_seconds = sum(results[m].seconds for m in fed_rounds)
    site_rounds = sum(results[m].site_rounds for m in fed_rounds)
    archetypes: dict[str, int] = {}
    for res in results.values():
        for s in res.scores:
            archetypes[s.archetype] = archetypes.get(s.archetype, 0) + 1
        break
    from fedge import __version__

    return {
        "fedge_version": __version__,
        "config": config.to_dict(),
        "data": {**data_info, "evaluated_sites": len(indices), "archetypes": archetypes},
        "forecast": {
            "horizon_steps": plan.forecast.horizon,
            "horizon_minutes": config.horizon_minutes,
            "step_minutes": config.horizon_minutes // plan.forecast.horizon,
            "lookback_steps": plan.forecast.lookback,
            "by_horizon": _by_horizon(
                results, horizons, config.horizon_minutes // plan.forecast.horizon
            ),
            "methods": methods,
            "rounds": primary,
            "rounds_by_method": fed_rounds,
            "sites": [
                {
                    "site_id": s.site_id,
                    "archetype": s.archetype,
                    "nrmse": {m: results[m].scores[k].nrmse for m in results},
                }
                for k, s in enumerate(next(iter(results.values())).scores)
            ],
        },
        "timing": {
            "wall_s": round(wall, 2),
            "federated_s": round(fed_seconds, 2),
            "site_rounds": site_rounds,
            "site_rounds_per_min": round(site_rounds / (fed_seconds / 60.0), 2)
            if fed_seconds
            else None,
            "per_method_s": {m: round(r.seconds, 2) for m, r in results.items()},
        },
        "artifacts": artifacts,
    }


def _plot_series(
    tasks: dict[int, SiteTask],
    weights: dict[str, Weights],
    plan: FederationPlan,
    config: SimulationConfig,
) -> dict[str, dict[str, NDArray[np.float64]]]:
    """First test day of one site per archetype: actual vs the federated forecast."""
    chosen: dict[str, SiteTask] = {}
    for t in tasks.values():
        chosen.setdefault(t.series.archetype, t)
    method = next((m for m in ("fedavg", "fedprox", "centralized") if m in weights), None)
    model = None
    if method is not None:
        model = LoadForecaster(plan.forecast)
        set_weights(model, weights[method])
    out: dict[str, dict[str, NDArray[np.float64]]] = {}
    for arch, t in chosen.items():
        p = t.prepared
        n = min(len(p.test_ends), PLOT_DAYS * t.series.steps_per_day)
        act = actuals(t.series.values, p.test_ends[:n], plan.forecast.horizon, TARGET_INDEX)
        act = act[:, -1, :]
        entry = {"actual": act}
        if model is not None and method is not None:
            fc = p.scaler.inverse(predict(model, p.x_test[:n]), TARGET_INDEX)[:, -1, :]
            entry[method] = fc
        out[f"{arch} ({t.series.site_id})"] = entry
    return out
