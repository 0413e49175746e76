"""Training the decision agents: DQN on the energy cluster, PPO on the slice allocation.

The order matters: the DQN is trained first, then run over the training days, and the
PPO learns under the modes and offloaded load that plan produces (the tactical state
carries the strategic context). Both policies are exported to ONNX with a manifest.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from fedge.core import (
    ENERGY_ONNX,
    ENERGY_OUTPUTS,
    MANIFEST,
    OBS_INPUT,
    SLICE_ONNX,
    SLICE_OUTPUT,
    PolicyFile,
    PolicyManifest,
    policy_version,
)
from fedge.decisions import (
    BASE_FLOOR,
    DEFAULT_HEADROOM,
    EARTH_MACRO,
    ENERGY_OBS_DIM,
    ENERGY_OBS_NAMES,
    MARGIN_RANGE,
    SHARE_NAMES,
    SLICE_OBS_DIM,
    SLICE_OBS_NAMES,
    SLICES,
    URLLC,
    URLLC_HEADROOM,
    CarrierPower,
    DecisionData,
    DecisionError,
    PowerModel,
    TR38864Model,
    check_headroom,
)
from fedge.models import Weights
from fedge.simulation._decision_data import build_data
from fedge.simulation._energy_env import EnergySavingEnv, rollout
from fedge.simulation._generator import GeneratorConfig
from fedge.simulation._slice_env import SliceAllocationEnv, context
from fedge.simulation._source import GeneratedSites, SiteSource


class DecisionProgress(Protocol):
    def start(self, task: str, total: int) -> None: ...

    def advance(self, task: str) -> None: ...


class _NoProgress:
    def start(self, task: str, total: int) -> None:
        pass

    def advance(self, task: str) -> None:
        pass


@dataclass(frozen=True)
class DecisionConfig:
    """What ``fedge decisions train`` trains on, and for how long."""

    name: str = "default"
    generator: GeneratorConfig = field(
        default_factory=lambda: GeneratorConfig(num_sites=20, days=21)
    )
    cluster_size: int = 4
    val_days: int = 2
    test_days: int = 3
    # The hour-ahead forecaster: FedAvg rounds (one local pass over each site's training
    # windows per round), as ``fedge simulate`` trains the model the fleet serves.
    forecast_rounds: int = 10
    dqn_timesteps: int = 150_000
    ppo_timesteps: int = 300_000
    seed: int = 0
    headroom: float = DEFAULT_HEADROOM
    power: CarrierPower = EARTH_MACRO

    def __post_init__(self) -> None:
        if not isinstance(self.power, PowerModel | TR38864Model):
            raise DecisionError(f"power must be a power model, got {type(self.power).__name__}")
        if self.cluster_size < 2:
            raise DecisionError(f"cluster_size must be >= 2, got {self.cluster_size}")
        if self.forecast_rounds < 1:
            raise DecisionError(f"forecast_rounds must be >= 1, got {self.forecast_rounds}")
        if self.dqn_timesteps < 100 or self.ppo_timesteps < 64:
            raise DecisionError("need at least 100 DQN and 64 PPO timesteps")
        if self.val_days < 1 or self.test_days < 1:
            raise DecisionError("val_days and test_days must be >= 1")
        check_headroom(self.headroom)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["power"] = self.power.describe()
        return out


DECISION_PRESETS: dict[str, DecisionConfig] = {
    # The demo's sites (20 sites, 21 days: 16 train, 2 validation, 3 held-out days).
    "default": DecisionConfig(),
    # Seconds, for tests and first contact: the numbers mean nothing.
    "smoke": DecisionConfig(
        name="smoke",
        generator=GeneratorConfig(num_sites=8, days=6),
        val_days=1,
        test_days=1,
        forecast_rounds=2,
        dqn_timesteps=600,
        ppo_timesteps=256,
    ),
}


def decision_preset(name: str) -> DecisionConfig:
    try:
        return DECISION_PRESETS[name]
    except KeyError:
        raise DecisionError(
            f"unknown decision preset {name!r}; choose from {', '.join(DECISION_PRESETS)}"
        ) from None


@dataclass
class Trained:
    config: DecisionConfig
    data: DecisionData
    out_dir: Path
    manifest: dict[str, Any]
    seconds: dict[str, float]
    dqn: Any  # stable_baselines3.DQN
    ppo: Any  # stable_baselines3.PPO


def config_data(
    config: DecisionConfig,
    source: SiteSource | None = None,
    on_round: Callable[[], None] | None = None,
    *,
    workers: int = 2,
) -> tuple[DecisionData, Weights]:
    """A preset's decision arrays, with its federated forecaster's hour-ahead forecasts
    (what :func:`train` trains on; the tests and benchmarks build them the same way)."""
    return build_data(
        source or GeneratedSites(config.generator),
        config.cluster_size,
        config.val_days,
        config.test_days,
        config.forecast_rounds,
        config.seed,
        on_round,
        config.headroom,
        config.power,
        workers=workers,
    )


def train(
    config: DecisionConfig,
    out_dir: Path,
    source: SiteSource | None = None,
    progress: DecisionProgress | None = None,
    threads: int = 2,
    forecast: DecisionData | None = None,
) -> Trained:
    """Federated forecaster, then DQN, then PPO; writes SB3 zips, ONNX policies and the manifest.

    ``forecast``: the arrays of an earlier training on the same sites and settings, to
    train under another power model without fitting the forecaster again."""
    import torch
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    progress = progress or _NoProgress()
    torch.set_num_threads(threads)
    source = source or GeneratedSites(config.generator)
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    if forecast is not None:
        if forecast.headroom != config.headroom or forecast.clusters.shape[1] != (
            config.cluster_size
        ):
            raise DecisionError("the forecast arrays were made with another headroom or cluster")
        data = replace(forecast, power=config.power)
    else:
        progress.start("hour-ahead forecaster (fedavg)", config.forecast_rounds)
        data, _ = config_data(
            config,
            source,
            lambda: progress.advance("hour-ahead forecaster (fedavg)"),
            workers=threads,
        )
    seconds["forecaster"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    energy_env = EnergySavingEnv(data, "train")
    energy_env.reset(seed=config.seed)
    dqn = DQN(
        "MlpPolicy",
        energy_env,
        learning_rate=5e-4,
        buffer_size=100_000,
        learning_starts=min(5_000, config.dqn_timesteps // 10),
        batch_size=128,
        gamma=0.98,
        train_freq=4,
        target_update_interval=2_000,
        exploration_fraction=0.3,
        exploration_final_eps=0.02,
        policy_kwargs={"net_arch": [64, 64]},
        seed=config.seed,
        device="cpu",
        verbose=0,
    )
    dqn.learn(config.dqn_timesteps, callback=_ticks(progress, "DQN energy", config.dqn_timesteps))
    seconds["dqn"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    plan = rollout(data, data.block_starts("train"), torch_energy_policy(dqn))
    ctx = context(data, plan, config.seed)
    lo = int(plan.starts[0])
    hi = int(plan.starts[-1]) + 3

    def make(rank: int) -> Any:
        def build() -> SliceAllocationEnv:
            env = SliceAllocationEnv(ctx, lo, hi)
            env.reset(seed=config.seed * 100 + rank)
            return env

        return build

    vec = DummyVecEnv([make(r) for r in range(4)])
    vec.seed(config.seed)
    ppo = PPO(
        "MlpPolicy",
        vec,
        learning_rate=3e-4,
        n_steps=256,
        batch_size=256,
        n_epochs=5,
        gamma=0.0,
        gae_lambda=1.0,
        ent_coef=0.0,
        # Exploration std 0.05 of the margin range: chosen by validation reward among
        # log-std 0, -1, -2, -2.5, -3, -4 (docs/decisions.md); wider starts drift the
        # clipped margins to their bound.
        policy_kwargs={"net_arch": [64, 64], "log_std_init": -3.0},
        seed=config.seed,
        device="cpu",
        verbose=0,
    )
    ppo.learn(config.ppo_timesteps, callback=_ticks(progress, "PPO slices", config.ppo_timesteps))
    seconds["ppo"] = time.perf_counter() - t0

    dqn.save(out_dir / "energy_dqn.zip")
    ppo.save(out_dir / "slice_ppo.zip")
    export_energy_onnx(dqn, out_dir / ENERGY_ONNX)
    export_slice_onnx(ppo, out_dir / SLICE_ONNX)
    manifest = write_manifest(out_dir, config, data, seconds)
    return Trained(config, data, out_dir, manifest, seconds, dqn, ppo)


def _ticks(progress: DecisionProgress, task: str, total: int) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    every = max(1, total // 100)
    ticks = -(-total // every)
    progress.start(task, ticks)

    class Ticks(BaseCallback):
        done = 0

        def _on_step(self) -> bool:
            while self.done < min(ticks, self.num_timesteps // every):
                self.done += 1
                progress.advance(task)
            return True

    return Ticks()


def torch_energy_policy(dqn: Any) -> Any:
    """Greedy modes from the SB3 Q-network, batched."""
    import torch

    def policy(obs: NDArray[np.float32], sites: NDArray[np.int64]) -> NDArray[np.int64]:
        with torch.no_grad():
            q = dqn.q_net(torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32)))
        modes: NDArray[np.int64] = q.argmax(dim=1).numpy().astype(np.int64)
        return modes

    return policy


def _export(module: Any, dim: int, outputs: list[str], path: Path) -> None:
    import torch

    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (torch.zeros(1, dim),),
                str(path),
                input_names=[OBS_INPUT],
                output_names=outputs,
                dynamic_axes={OBS_INPUT: {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
                opset_version=17,
                dynamo=False,
            )
    except Exception as exc:  # torch raises many unrelated types from its exporters
        raise DecisionError(f"ONNX export of {path.name} failed: {exc}") from exc


def export_energy_onnx(dqn: Any, path: Path) -> Path:
    """obs (batch, 17) -> mode (batch,) int64 and q_values (batch, modes of the power model)."""
    import torch

    class Greedy(torch.nn.Module):
        def __init__(self, q_net: torch.nn.Module) -> None:
            super().__init__()
            self.q_net = q_net

        def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            q = self.q_net(obs)
            return q.argmax(dim=1), q

    _export(Greedy(dqn.q_net), ENERGY_OBS_DIM, list(ENERGY_OUTPUTS), path)
    return path


def export_slice_onnx(ppo: Any, path: Path) -> Path:
    """obs (batch, 14) -> shares (batch, 4): the deterministic margins through the same
    carrier fitting as :func:`fedge.decisions.shares_from_action`."""
    import torch

    i_now, i_fc = SLICE_OBS_NAMES.index("embb_now"), SLICE_OBS_NAMES.index("embb_fc")
    n = len(SLICES)
    headroom = torch.ones(n)
    headroom[URLLC] = URLLC_HEADROOM

    class Shares(torch.nn.Module):
        def __init__(self, policy: Any) -> None:
            super().__init__()
            self.extractor = policy.mlp_extractor
            self.action_net = policy.action_net
            self.headroom: torch.Tensor
            self.register_buffer("headroom", headroom)

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            a = torch.clamp(self.action_net(self.extractor.forward_actor(obs)), -1.0, 1.0)
            now, fc = obs[:, i_now : i_now + n], obs[:, i_fc : i_fc + n]
            base = (torch.clamp(torch.maximum(now, fc), min=0.0) + BASE_FLOOR) * self.headroom
            want = base * torch.pow(torch.tensor(MARGIN_RANGE), a)
            lo = torch.minimum(want, base)
            lo_sum = lo.sum(dim=1, keepdim=True)
            extra = want - lo
            extra_sum = extra.sum(dim=1, keepdim=True)
            slack = torch.clamp(1.0 - lo_sum, min=0.0)
            squeezed = torch.where(
                lo_sum >= 1.0,
                lo / torch.clamp(lo_sum, min=1e-12),
                lo + extra * slack / torch.clamp(extra_sum, min=1e-12),
            )
            alloc = torch.where(want.sum(dim=1, keepdim=True) <= 1.0, want, squeezed)
            unreserved = torch.clamp(1.0 - alloc.sum(dim=1, keepdim=True), min=0.0)
            return torch.cat([alloc, unreserved], dim=1)

    _export(Shares(ppo.policy), SLICE_OBS_DIM, [SLICE_OUTPUT], path)
    return path


def write_manifest(
    out_dir: Path, config: DecisionConfig, data: DecisionData, seconds: dict[str, float]
) -> dict[str, Any]:
    """The policy version is a digest of both ONNX files: same bytes, same version."""
    import stable_baselines3

    blobs = {name: (out_dir / name).read_bytes() for name in (ENERGY_ONNX, SLICE_ONNX)}
    files = {name: hashlib.sha256(blob).hexdigest() for name, blob in blobs.items()}
    manifest = PolicyManifest(
        version=policy_version(blobs.values()),
        energy=PolicyFile(ENERGY_ONNX, files[ENERGY_ONNX], ENERGY_OBS_NAMES, data.power.modes),
        slices=PolicyFile(SLICE_ONNX, files[SLICE_ONNX], SLICE_OBS_NAMES, SHARE_NAMES),
        details={
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "sites": list(data.site_ids),
            "cluster_size": int(data.clusters.shape[1]),
            "headroom": data.headroom,
            "power": data.power.describe(),
            "forecaster": dict(data.forecaster),
            "config": config.to_dict(),
            "train_seconds": {k: round(v, 1) for k, v in seconds.items()},
            "stable_baselines3": stable_baselines3.__version__,
        },
    ).to_dict()
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def config_for_run(preset_name: str, generator: GeneratorConfig, seed: int) -> DecisionConfig:
    """The decision preset's budgets on a simulation run's own sites and seed."""
    return replace(decision_preset(preset_name), generator=generator, seed=seed)
