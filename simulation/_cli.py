"""``fedge simulate`` and ``fedge data``: thin typer wrappers over the harness."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from fedge.simulation._config import ALL_METHODS, PRESETS, preset
from fedge.simulation._errors import SimulationError


def simulate(
    preset_name: Annotated[
        str, typer.Option("--preset", help=f"One of: {', '.join(PRESETS)}.")
    ] = "demo",
    name: Annotated[
        str | None, typer.Option(help="Run name: writes runs/<name>/ (default: the preset).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Operator KPI export instead of the generator: a CSV/Parquet file, or a "
            "folder of 3GPP PM XML (TS 32.435).",
        ),
    ] = None,
    step_minutes: Annotated[
        int | None, typer.Option(help="Step of --data in minutes (default: inferred).")
    ] = None,
    sites: Annotated[int | None, typer.Option(help="Number of generated sites.")] = None,
    days: Annotated[int | None, typer.Option(help="Days of generated telemetry per site.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Federated rounds.")] = None,
    fraction_train: Annotated[
        float | None, typer.Option(help="Share of sites sampled per round.")
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help=f"Comma-separated subset of: {', '.join(ALL_METHODS)}.")
    ] = None,
    horizon_minutes: Annotated[
        int | None,
        typer.Option(
            help="Forecast every step up to this many minutes ahead (default 60); a whole "
            "number of the sites' steps."
        ),
    ] = None,
    lookback: Annotated[int | None, typer.Option(help="Input window in steps.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for data, sampling and training.")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Parallel site workers (default: CPU count).")
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Run the federated methods on this running Ray cluster (its head's "
            "host:port) instead of a local one.",
        ),
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run directories go.")] = Path("runs"),
    codec: Annotated[
        str | None,
        typer.Option(
            help="Compress and seal updates: fp32, fp16, int8, int8-channel, int8+sr, int4, "
            "topk:<fraction>, sign; none = plain Flower messages (docs/compression.md)."
        ),
    ] = None,
    sweep: Annotated[
        str | None,
        typer.Option(
            help="Codecs, comma-separated (';' when one is a schedule like 'int4@1,topk:0.03'): "
            "one extra FedAvg run each, RMSE-vs-bytes plot."
        ),
    ] = None,
    attacks: Annotated[
        str | None,
        typer.Option(
            help="Misbehaving sites, e.g. 'boosted=0.1,tampered=0.05' (tampered, replayed, "
            "nonfinite, misshaped, boosted; boost=<factor>). Needs --codec."
        ),
    ] = None,
    downlink_codec: Annotated[
        str | None,
        typer.Option(
            help="Codec of the sealed global model sent down: fp32, fp16, int8, int8-channel."
        ),
    ] = None,
    feedback: Annotated[
        str | None,
        typer.Option(
            help="Error feedback: 'tracked' (default; EF21: both ends keep the site's update "
            "estimate, the server averages those) or 'residual' (the site keeps what was not sent)."
        ),
    ] = None,
    residual_decay: Annotated[
        float | None,
        typer.Option(
            help="With --feedback residual: residual x decay^missed rounds (1 keeps it whole)."
        ),
    ] = None,
    regions: Annotated[
        int | None,
        typer.Option(
            help="Regional aggregators between the sites and the coordinator (1..sites; "
            "needs --codec); the run is also done flat to compare (docs/hierarchy.md)."
        ),
    ] = None,
    region_codec: Annotated[
        str | None,
        typer.Option(help="Codec of the regions' updates to the coordinator (default: --codec)."),
    ] = None,
    placements: Annotated[
        bool,
        typer.Option(
            "--placements",
            help="Compare central, edge and central-then-edge training: compute and bytes "
            "(needs fedavg, centralized and centralized+ft in --methods, and --codec).",
        ),
    ] = False,
    decisions: Annotated[
        bool,
        typer.Option(
            "--decisions",
            help="Also train the DQN/PPO decision agents and run them on the held-out days.",
        ),
    ] = False,
) -> None:
    """Federated load forecasting over many simulated sites, against the baselines."""
    from rich.console import Console

    from fedge.simulation._progress import RichProgress
    from fedge.simulation._report import console_results, console_summary, write_report
    from fedge.simulation._run import run

    config = preset(preset_name)
    gen = config.generator
    if sites is not None:
        gen = replace(gen, num_sites=sites)
    if days is not None:
        gen = replace(gen, days=days)
    if seed is not None:
        gen = replace(gen, seed=seed)
    changes: dict[str, Any] = {
        "name": name,
        "data_path": str(data) if data is not None else None,
        "step_minutes": step_minutes,
        "num_rounds": rounds,
        "fraction_train": fraction_train,
        "methods": tuple(m.strip() for m in methods.split(",") if m.strip())
        if methods is not None
        else None,
        "horizon_minutes": horizon_minutes,
        "lookback": lookback,
        "seed": seed,
        "workers": workers,
        "ray_address": ray_address,
        "codec": codec,
        "sweep": tuple(c.strip() for c in sweep.split(";" if ";" in sweep else ",") if c.strip())
        if sweep is not None
        else None,
        "attacks": attacks,
        "downlink_codec": downlink_codec,
        "residual_decay": residual_decay,
        "feedback": feedback,
        "decisions": decisions or None,
        "regions": regions,
        "placements": placements or None,
        "region_codec": region_codec,
    }
    try:
        config = replace(
            config, generator=gen, **{k: v for k, v in changes.items() if v is not None}
        )
    except TypeError as exc:
        raise SimulationError(str(exc)) from exc
    console = Console()
    with RichProgress(console) as progress:
        result = run(config, runs_dir, progress)
    json_path, html_path = write_report(result.report, result.run_dir, result.plot_series)
    console.print(console_summary(result.report))
    for line in console_results(result.report):
        console.print(line, highlight=False, markup=False)
    console.print(f"report: {json_path}  {html_path}")


def export(
    path: Annotated[Path, typer.Argument(help="File to write: .csv, or .parquet/.pq for Parquet.")],
    preset_name: Annotated[
        str, typer.Option("--preset", help="Generator settings of this preset.")
    ] = "demo",
    sites: Annotated[int | None, typer.Option(help="Number of sites.")] = None,
    days: Annotated[int | None, typer.Option(help="Days per site.")] = None,
    seed: Annotated[int | None, typer.Option(help="Generator seed.")] = None,
) -> None:
    """Write generated telemetry in the operator import format (see docs/data-format.md)."""
    from fedge.simulation._generator import SiteGenerator
    from fedge.simulation._kpi_file import export_kpi_file

    gen = preset(preset_name).generator
    overrides: dict[str, Any] = {"num_sites": sites, "days": days, "seed": seed}
    gen = replace(gen, **{k: v for k, v in overrides.items() if v is not None})
    export_kpi_file(SiteGenerator(gen), path)
    typer.echo(f"wrote {gen.num_sites} sites x {gen.days} days to {path}")


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
    data_app = typer.Typer(help="Site telemetry: the import format.", no_args_is_help=True)
    data_app.command("export")(export)
    app.add_typer(data_app, name="data")
