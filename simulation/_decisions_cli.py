"""``fedge decisions train``: train, export and evaluate the energy and slice agents."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from fedge.decisions import CarrierPower

decisions_app = typer.Typer(
    help="Central decisions: DQN energy saving and PPO slice allocation.", no_args_is_help=True
)


class _Bars:
    """Rich progress bars, one per training stage."""

    def __init__(self, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks: dict[str, Any] = {}

    def start(self, task: str, total: int) -> None:
        self.tasks[task] = self.progress.add_task(task, total=total)

    def advance(self, task: str) -> None:
        if task in self.tasks:
            self.progress.advance(self.tasks[task])


@decisions_app.command("train")
def train_command(
    preset_name: Annotated[
        str, typer.Option("--preset", help="default (the demo's 20 sites) or smoke.")
    ] = "default",
    out: Annotated[Path, typer.Option(help="Policy directory to write.")] = Path("runs/decisions"),
    seed: Annotated[int | None, typer.Option(help="Seed for data, forecaster and agents.")] = None,
    dqn_steps: Annotated[int | None, typer.Option(help="DQN timesteps.")] = None,
    ppo_steps: Annotated[int | None, typer.Option(help="PPO timesteps.")] = None,
    headroom: Annotated[
        float | None,
        typer.Option(
            help="Share of a site's PRBs the energy layer may fill (default 0.84): lower "
            "keeps more room for the slices' SLA, higher saves more energy."
        ),
    ] = None,
    power_model_name: Annotated[
        str,
        typer.Option(
            "--power-model",
            help="Carrier power model: earth (EARTH macro cell, one sleep state) or tr38864 "
            "(3GPP TR 38.864 Cat. 1 Set 1: deep, light and micro sleep).",
        ),
    ] = "earth",
    idle_w: Annotated[
        float | None, typer.Option(help="Carrier power idle, P0 in W (EARTH macro: 130).")
    ] = None,
    delta_p: Annotated[
        float | None, typer.Option(help="Load slope Δp of the carrier power (EARTH: 4.7).")
    ] = None,
    pmax_w: Annotated[
        float | None, typer.Option(help="Carrier RF output at full load, W (EARTH: 20).")
    ] = None,
    sleep_w: Annotated[
        float | None, typer.Option(help="Carrier power asleep, W (EARTH macro: 75).")
    ] = None,
) -> None:
    """Federate the hour-ahead forecaster (FedAvg), train the DQN and the PPO on its
    forecasts; export ONNX; score held-out days."""
    from rich.console import Console
    from rich.table import Table

    from fedge.simulation._decision_eval import held_out
    from fedge.simulation._decision_train import decision_preset, train

    config = decision_preset(preset_name)
    changes: dict[str, Any] = {
        "seed": seed,
        "dqn_timesteps": dqn_steps,
        "ppo_timesteps": ppo_steps,
        "headroom": headroom,
        "power": _power(power_model_name, idle_w, delta_p, pmax_w, sleep_w),
    }
    config = replace(config, **{k: v for k, v in changes.items() if v is not None})
    if seed is not None:
        config = replace(config, generator=replace(config.generator, seed=seed))
    console = Console()
    bars = _Bars(console)
    with bars.progress:
        trained = train(config, out, progress=bars)
    section = held_out(trained)
    section.pop("plot_data")
    (out / "evaluation.json").write_text(json.dumps(section, indent=2) + "\n")
    table = Table(
        title=f"held-out days ({trained.config.test_days}), policy {section['policy_version']}"
    )
    for col in ("method", "energy saved", "of ceiling", "QoS viol.", "reward"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for m, r in section["energy"].items():
        if "reward" not in r:  # a ceiling, printed below
            continue
        ratio = r.get("ratio_to_ceiling")
        table.add_row(
            m,
            f"{r['energy_saved_pct']:.1f}%",
            "-" if ratio is None else f"{100 * ratio:.0f}%",
            f"{100 * r['qos_violation_rate']:.2f}%",
            f"{r['reward']:.4f}",
        )
    console.print(table)
    table = Table()
    for col in ("slice method", "SLA met", "PRBs reserved", "reward"):
        table.add_column(col, justify="left" if col == "slice method" else "right")
    for m, r in section["slices"].items():
        if "reward" not in r:
            continue
        table.add_row(
            m,
            f"{100 * r['sla_satisfaction']:.2f}%",
            f"{r['reserved_prb_pct']:.1f}%",
            f"{r['reward']:.4f}",
        )
    console.print(table)
    e_ceiling, s_ceiling = (
        section["energy"].get("hindsight_bound"),
        section["slices"].get("hindsight_bound"),
    )
    if e_ceiling:
        console.print(
            f"ceiling ({trained.data.power.name}): at most {e_ceiling['energy_saved_pct']:.1f}% "
            "energy saved in hindsight"
        )
    if s_ceiling:
        console.print(
            f"ceiling: SLA met in at most {100 * s_ceiling['sla_satisfaction']:.2f}% of "
            f"site-steps in hindsight, "
            f"{100 * s_ceiling['sla_satisfaction_without_foresight']:.2f}% without foresight"
        )
    fc = section["forecaster"]
    if fc:
        console.print(
            f"forecaster: {fc['method']}, best round {fc['best_round']} of {fc['rounds']}, "
            f"validation RMSE of fc_load {fc['val_rmse_fc_load']:.4f}"
        )
    lat = section["latency_us"]
    console.print(f"decision latency p50 {lat['p50']} µs, p99 {lat['p99']} µs")
    console.print(f"policies: {out}  evaluation: {out / 'evaluation.json'}")


def _power(
    name: str,
    idle_w: float | None,
    delta_p: float | None,
    pmax_w: float | None,
    sleep_w: float | None,
) -> CarrierPower:
    """The named model; under EARTH, the operator's own figures in place of those given."""
    from fedge.decisions import DecisionError, PowerModel, power_model

    model = power_model(name)
    given = {"p0_w": idle_w, "delta_p": delta_p, "pmax_w": pmax_w, "sleep_w": sleep_w}
    changes = {k: v for k, v in given.items() if v is not None}
    if not changes:
        return model
    if not isinstance(model, PowerModel):
        raise DecisionError(
            f"--idle-w, --delta-p, --pmax-w and --sleep-w are EARTH figures; the {name} "
            "model takes none of them"
        )
    fig: dict[str, Any] = {**changes, "source": "operator figures over EARTH macro cell"}
    return replace(model, **fig)


def register(app: typer.Typer) -> None:
    app.add_typer(decisions_app, name="decisions")
