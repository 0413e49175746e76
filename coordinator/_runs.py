"""Federation runs: the coordinator starts fedge's ServerApp on a SuperLink (``flwr run``)
and records what the ServerApp reports back, one committed row per round.

The ServerApp runs inside Flower's SuperExec, not here, so it reports each round and the
final model over HTTP (``federation/_report.py``), authenticated by a per-run token the
coordinator hands it in the run config and stores only hashed. The coordinator supervises
its runs: when it starts and finds runs it had left live, it marks them and their open
round ``interrupted`` (completed rounds stay), asks the SuperLink to stop them, and refuses
any later report for them with 409, which ends a ServerApp still running; with replicas
on PostgreSQL, a run is its launching replica's (an advisory lock, ``_leader``) and the
leader does the same to the live runs whose replica is gone. An operator
cancels a live run the same way (``DELETE /runs/{id}``): it is marked ``cancelled``, its
open round ``interrupted``, and the SuperLink is asked to stop it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from fedge.coordinator._audit import audit_entry
from fedge.coordinator._errors import (
    ConflictError,
    InvalidInputError,
    NotConfiguredError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
)
from fedge.coordinator._events import note
from fedge.coordinator._retraining import RunStart, Trigger, production_id
from fedge.coordinator._schema import (
    ModelVersion,
    Round,
    RoundReport,
    RoundStatus,
    Run,
    RunConfigValue,
    RunCreate,
    RunModelReport,
    RunStatus,
    Site,
)
from fedge.coordinator._settings import CoordinatorSettings
from fedge.coordinator._store import ModelStore, decode_model
from fedge.core import RUN_TOKEN_HEADER
from fedge.security import SiteIdentity

__all__ = ["RUN_TOKEN_HEADER", "Federation", "flwr_config", "run_config"]

log = logging.getLogger(__name__)

FEDERATION = "fedge"  # the name of the coordinator's SuperLink in its own FLWR_HOME
#: Keys the coordinator sets itself; a run request cannot override them.
RESERVED = ("num-rounds", "strategy", "codec", "coordinator-url", "coordinator-run-id",
            "coordinator-token", "output-dir", "state-dir", "attacks",
            "key-directory")  # fmt: skip
FLWR = str(Path(sys.executable).with_name("flwr"))


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def app_config(app_dir: Path) -> dict[str, Any]:
    """The app's ``[tool.flwr.app.config]``: the only keys ``flwr run`` lets us override."""
    try:
        with (app_dir / "pyproject.toml").open("rb") as handle:
            config = tomllib.load(handle)["tool"]["flwr"]["app"]["config"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInputError(f"{app_dir} is not a Flower app with a run config: {exc}") from exc
    return dict(config)


def run_config(app_dir: Path, spec: RunCreate) -> dict[str, RunConfigValue]:
    """The full run config of ``spec``, checked the way the ServerApp will read it."""
    defaults = app_config(app_dir)
    for key, value in spec.config.items():
        if key in RESERVED or key not in defaults:
            raise InvalidInputError(f"run config key {key!r} is not one a run request may set")
        _same_kind(key, value, defaults[key])
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(f"run config {key!r} must be finite")
        if isinstance(value, str) and len(value) > 2000:
            raise InvalidInputError(f"run config {key!r} is longer than 2000 characters")
    config = {**defaults, **spec.config}
    config.update({"num-rounds": spec.num_rounds, "strategy": spec.strategy, "codec": spec.codec})
    from fedge import FedgeError
    from fedge.federation import FederationPlan

    try:  # a bad forecast spec is a ModelError, a bad codec a CodecError: all FedgeErrors
        FederationPlan.from_config(config)
    except (FedgeError, ValueError, TypeError) as exc:
        raise InvalidInputError(f"bad run: {exc}") from exc
    return config


def _same_kind(key: str, value: RunConfigValue, default: object) -> None:
    """A value of the kind the app's default has (an int where a float goes is fine): the
    ServerApp would otherwise fail on it only after the run was handed to the SuperLink."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise InvalidInputError(
            f"run config {key!r} must be a {type(default).__name__}, got {value!r}"
        )


def _toml(config: dict[str, Any]) -> str:
    """Run-config overrides as TOML (JSON strings are valid TOML basic strings)."""
    lines = []
    for key, value in config.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            text = json.dumps(str(value))
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def flwr_config(settings: CoordinatorSettings) -> str:
    """The coordinator's FLWR_HOME ``config.toml``: its one SuperLink connection, over TLS
    unless the settings allow plaintext (to a loopback SuperLink only)."""
    if settings.superlink_insecure:
        transport = "insecure = true\n"
    elif settings.superlink_root_certificates is not None:  # absolute, checked by the settings
        transport = f"root-certificates = {json.dumps(str(settings.superlink_root_certificates))}\n"
    else:  # TLS, verified with the system's trust store (flwr's default)
        transport = "insecure = false\n"
    return (
        f'[superlink]\ndefault = "{FEDERATION}"\n[superlink.{FEDERATION}]\n'
        f"address = {json.dumps(str(settings.superlink))}\n{transport}"
    )


class Federation:
    """Starts runs on the SuperLink and records their rounds and final models."""

    def __init__(
        self,
        settings: CoordinatorSettings,
        engine: Engine,
        store: ModelStore,
        identity: SiteIdentity | None = None,
    ) -> None:
        """``identity``: the coordinator's own, which each run's ServerApp is given (as a
        per-run export) to seal the run with the enrolled sites."""
        self.settings, self.engine, self.store = settings, engine, store
        self.identity = identity
        self._threads: list[threading.Thread] = []
        #: Called with the id of each model version a run stored (automatic promotion).
        self.on_model: Callable[[int], object] | None = None
        #: Called with a new run's id before its row is stored: the replica driving it
        #: marks it as its own (``_leader.Leadership.hold_run``).
        self.holder: Callable[[str], None] | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.superlink is not None

    # --- the operator's side -----------------------------------------------------------

    def create(
        self,
        actor: str,
        spec: RunCreate,
        *,
        rerun_of: str | None = None,
        trigger: Trigger = Trigger.OPERATOR,
        statistic: float | None = None,
        sites: int | None = None,
        detail: str = "",
    ) -> tuple[Run, str, dict[str, RunConfigValue]]:
        """Record a run in ``starting``, and its start (why, and the version in production
        now, the parent of the run's model); its token (shown to no one but its ServerApp)
        and its full run config."""
        config = run_config(self.settings.flwr_app, spec)
        token = secrets.token_urlsafe(32)
        run = Run(
            id=secrets.token_hex(16),
            num_rounds=spec.num_rounds,
            strategy=spec.strategy,
            codec=spec.codec,
            config=dict(spec.config),
            token_hash=_hash(token),
            rerun_of=rerun_of,
            created_at=time.time(),
            created_by=actor[:64],
        )
        if self.holder is not None:
            self.holder(run.id)
        with Session(self.engine) as session:
            start = RunStart(
                run_id=run.id,
                trigger=trigger.value,
                statistic=statistic,
                sites=sites,
                baseline_model_id=production_id(session),
                at=run.created_at,
                actor=actor[:64],
                detail=detail[:500],
            )
            session.add(run)
            session.flush()  # the run's row first: the start refers to it
            session.add(start)
            summary = f"{_summary(spec)}; {trigger.value}" + (f": {detail}" if detail else "")
            session.add(audit_entry(actor, "run.start", f"run:{run.id}", "ok", summary))
            session.commit()
            session.refresh(run)
        config.update({
            "coordinator-url": self.settings.url,
            "coordinator-run-id": run.id,
            "coordinator-token": token,
        })  # fmt: skip
        if self.identity is not None:
            config["key-directory"] = str(self.export_keys(run.id))
        return run, token, config

    def _keys_dir(self, run_id: str) -> Path:
        return self.settings.flwr_home.resolve() / "run-keys" / run_id

    def export_keys(self, run_id: str) -> Path:
        """The run's key directory for its ServerApp: the enrolled sites' public keys (all,
        with their status: a revoked site is refused by name) and the coordinator's
        identity under a fresh per-run KEK, in a private folder removed when the run ends."""
        from fedge.coordinator._registry import to_record
        from fedge.federation import export_run_keys

        if self.identity is None:
            raise ConflictError("the coordinator has no identity to seal runs with")
        with Session(self.engine) as session:
            sites = [to_record(row) for row in session.exec(select(Site)).all()]
        home = self.settings.flwr_home.resolve()
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        return export_run_keys(self._keys_dir(run_id), self.identity, sites)

    def forget_keys(self, run_id: str) -> None:
        shutil.rmtree(self._keys_dir(run_id), ignore_errors=True)

    def start(
        self,
        actor: str,
        spec: RunCreate,
        *,
        rerun_of: str | None = None,
        trigger: Trigger = Trigger.OPERATOR,
        statistic: float | None = None,
        sites: int | None = None,
        detail: str = "",
    ) -> Run:
        """Record the run, then hand it to ``flwr run`` in the background."""
        self.require_superlink()
        run_config(self.settings.flwr_app, spec)  # a bad request is refused first
        self._reachable()
        run, _, config = self.create(
            actor, spec, rerun_of=rerun_of, trigger=trigger, statistic=statistic, sites=sites,
            detail=detail,
        )  # fmt: skip
        thread = threading.Thread(
            target=self._launch, args=(run.id, config), name=f"flwr-run-{run.id}", daemon=True
        )
        self._threads.append(thread)
        thread.start()
        return run

    def require_superlink(self) -> None:
        """Starting runs is off until a SuperLink is configured; say which setting."""
        if not self.enabled:
            raise NotConfiguredError(
                "starting runs", "FEDGE_COORDINATOR_SUPERLINK", "the SuperLink's HOST:PORT"
            )

    def _reachable(self, timeout: float = 3.0) -> None:
        """Refuse a run while the SuperLink does not take connections: recorded and handed
        to ``flwr run`` it would only fail minutes later, out of the operator's sight."""
        host, _, port = str(self.settings.superlink).rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except OSError as exc:
            raise UnavailableError(
                f"the SuperLink at {self.settings.superlink} is not reachable: "
                f"{exc.strerror or exc}"
            ) from exc

    def rerun(self, actor: str, run_id: str) -> Run:
        """The same run again (an interrupted or failed one, or any other)."""
        self.require_superlink()
        old = self.run(run_id)
        spec = RunCreate(
            num_rounds=old.num_rounds, strategy=old.strategy, codec=old.codec, config=old.config
        )
        return self.start(actor, spec, rerun_of=old.id)

    def runs(self, limit: int) -> Sequence[Run]:
        with Session(self.engine) as session:
            query = select(Run).order_by(col(Run.created_at).desc()).limit(limit)
            return session.exec(query).all()

    def run(self, run_id: str) -> Run:
        with Session(self.engine) as session:
            row = session.get(Run, run_id)
        if row is None:
            raise NotFoundError(f"no run {run_id}")
        return row

    # --- flwr run and flwr stop --------------------------------------------------------

    def _flwr(self, *args: str, overrides: str | None = None) -> dict[str, Any]:
        """One ``flwr`` command against the settings' SuperLink; its JSON answer."""
        home = self.settings.flwr_home.resolve()
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        (home / "config.toml").write_text(flwr_config(self.settings))
        env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0"}
        cmd = [FLWR, *args, FEDERATION, "--format", "json"]
        path = None
        if overrides is not None:  # holds the run token: a private file, removed right after
            path = home / f"overrides-{secrets.token_hex(8)}.toml"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(overrides)
            cmd += ["--run-config", str(path)]
        try:
            done = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=300, check=False
            )
        finally:
            if path is not None:
                path.unlink(missing_ok=True)
        out = done.stdout
        try:  # flwr prints one (indented) JSON object, possibly after other lines
            answer: dict[str, Any] = json.loads(out[out.index("{") : out.rindex("}") + 1])
        except ValueError:  # no braces, or not JSON
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            answer = {"success": False, "error-message": f"exit {done.returncode}: {tail[0]}"}
        return answer

    def _launch(self, run_id: str, config: dict[str, Any]) -> None:
        try:
            answer = self._flwr("run", str(self.settings.flwr_app), overrides=_toml(config))
        except (OSError, subprocess.SubprocessError) as exc:
            answer = {"success": False, "error-message": f"cannot run flwr: {exc}"}
        with Session(self.engine) as session:
            run = session.get(Run, run_id)
            if run is None or not run.status.live:  # cancelled before flwr run answered
                if run is not None and answer.get("success") and answer.get("run-id"):
                    flwr_id = run.flwr_run_id = str(answer["run-id"])  # the one stopped
                    session.add(run)
                    session.commit()
                    # `flwr stop` takes seconds: reading the run back would begin a
                    # transaction (on SQLite, the write lock) and hold it all that time.
                    session.close()
                    self._stop([flwr_id])
                return
            if answer.get("success") and answer.get("run-id"):
                run.flwr_run_id = str(answer["run-id"])
                run.status = RunStatus.RUNNING
                entry = audit_entry("coordinator", "run.submitted", f"run:{run_id}", "ok",
                                    f"flwr run {run.flwr_run_id}")  # fmt: skip
            else:
                run.status, run.finished_at = RunStatus.FAILED, time.time()
                run.detail = f"flwr run refused: {answer.get('error-message', answer)}"[:500]
                entry = audit_entry("coordinator", "run.failed", f"run:{run_id}", "ok", run.detail)
            session.add(run)
            session.add(entry)
            session.commit()

    RESTARTED = "the coordinator restarted during the run; re-run it"
    #: Why a run left by a replica that is gone ends (``interrupted``): its ServerApp's
    #: ``flwr run`` and key export were that replica's, so it is not resumed elsewhere.
    ORPHANED = (
        "the coordinator replica driving the run stopped (restarted or failed over); re-run it"
    )

    def recover(self) -> list[str]:
        """At start: runs left live by a previous process are interrupted, as is their open
        round; the SuperLink is asked to stop them. Completed rounds are untouched."""
        return self.interrupt(None, self.RESTARTED)

    def live_ids(self) -> list[str]:
        with Session(self.engine) as session:
            return list(
                session.exec(
                    select(Run.id).where(
                        col(Run.status).in_([RunStatus.STARTING, RunStatus.RUNNING])
                    )
                ).all()
            )

    def interrupt(self, run_ids: list[str] | None, detail: str) -> list[str]:
        """Interrupt those of ``run_ids`` (all when None) that are still live, and their
        open round; the ids interrupted."""
        now = time.time()
        with Session(self.engine) as session:
            query = select(Run).where(col(Run.status).in_([RunStatus.STARTING, RunStatus.RUNNING]))
            if run_ids is not None:
                if not run_ids:
                    return []
                query = query.where(col(Run.id).in_(run_ids)).with_for_update()
            live = session.exec(query).all()
            if not live:
                return []
            ids = [r.id for r in live]
            flwr_ids = [r.flwr_run_id for r in live if r.flwr_run_id]
            session.connection().execute(
                update(Round)
                .where(col(Round.run_id).in_(ids), col(Round.status) == RoundStatus.RUNNING)
                .values(status=RoundStatus.INTERRUPTED, finished_at=now)
            )
            for run in live:
                self.forget_keys(run.id)
                run.status, run.finished_at = RunStatus.INTERRUPTED, now
                run.detail = detail
                session.add(run)
                session.add(audit_entry("coordinator", "run.interrupted", f"run:{run.id}", "ok",
                                        run.detail))  # fmt: skip
            session.commit()
        if self.enabled and flwr_ids:
            threading.Thread(target=self._stop, args=(flwr_ids,), daemon=True).start()
        return ids

    def cancel(self, actor: str, run_id: str) -> Run:
        """End a live run now: ``cancelled``, its open round ``interrupted`` (completed
        rounds stay), its key export removed; the SuperLink is asked to stop it in the
        background, and its ServerApp's later reports are refused with 409."""
        now = time.time()
        with Session(self.engine) as session:
            run = session.get(Run, run_id, with_for_update=True)
            if run is None:
                raise NotFoundError(f"no run {run_id}")
            if not run.status.live:
                raise ConflictError(f"run {run_id} is {run.status.value}; only a live run ends")
            session.connection().execute(
                update(Round)
                .where(col(Round.run_id) == run_id, col(Round.status) == RoundStatus.RUNNING)
                .values(status=RoundStatus.INTERRUPTED, finished_at=now)
            )
            run.status, run.finished_at = RunStatus.CANCELLED, now
            run.detail = f"cancelled by {actor}"[:500]
            session.add(run)
            session.add(audit_entry(actor, "run.cancel", f"run:{run_id}", "ok", run.detail))
            session.commit()
            session.refresh(run)
        self.forget_keys(run_id)
        if self.enabled and run.flwr_run_id:  # none yet: _launch stops it once it has one
            thread = threading.Thread(
                target=self._stop, args=([run.flwr_run_id],), name=f"flwr-stop-{run_id}",
                daemon=True,
            )  # fmt: skip
            self._threads.append(thread)
            thread.start()
        return run

    def _stop(self, flwr_ids: list[str]) -> None:
        for flwr_id in flwr_ids:
            try:
                answer = self._flwr("stop", flwr_id)
            except (OSError, subprocess.SubprocessError) as exc:
                answer = {"success": False, "error-message": str(exc)}
            if not answer.get("success"):  # it may have ended already
                log.warning("flwr stop %s: %s", flwr_id, answer.get("error-message", answer))

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the background ``flwr run`` launches (tests, shutdown)."""
        for thread in self._threads:
            thread.join(timeout)

    # --- the ServerApp's side ----------------------------------------------------------

    def check_token(self, run_id: str, token: str | None) -> None:
        """Refuse a report for ``run_id`` without its token before its body is read (the
        report itself checks again, under the row lock)."""
        with Session(self.engine) as session:
            run = session.get(Run, run_id)
            if run is None or not token or not hmac.compare_digest(run.token_hash, _hash(token)):
                raise UnauthenticatedError(f"a valid {RUN_TOKEN_HEADER} for this run is required")

    def _reporting(self, session: Session, run_id: str, token: str | None) -> Run:
        """The live run ``token`` belongs to; 401 for a wrong token, 409 once it ended."""
        run = session.get(Run, run_id, with_for_update=True)
        if run is None or not token or not hmac.compare_digest(run.token_hash, _hash(token)):
            raise UnauthenticatedError(f"a valid {RUN_TOKEN_HEADER} for this run is required")
        if not run.status.live:
            raise ConflictError(f"run {run_id} is {run.status.value}; it takes no more reports")
        return run

    def report_round(
        self, run_id: str, token: str | None, number: int, report: RoundReport
    ) -> Round:
        """Insert or update round ``number``; a completed round is final."""
        if report.status is RoundStatus.INTERRUPTED:
            raise InvalidInputError("only the coordinator marks a round interrupted")
        with Session(self.engine) as session:
            run = self._reporting(session, run_id, token)
            if number > run.num_rounds:
                raise InvalidInputError(f"run {run_id} has {run.num_rounds} rounds, not {number}")
            row = session.exec(
                select(Round).where(Round.run_id == run_id, Round.number == number)
            ).first()
            if row is not None and row.status is not RoundStatus.RUNNING:
                raise ConflictError(f"round {number} of run {run_id} is already {row.status.value}")
            row = row or Round(run_id=run_id, number=number, started_at=report.started_at,
                               strategy=report.strategy)  # fmt: skip
            for name, value in report.model_dump().items():
                setattr(row, name, value)
            if report.status is RoundStatus.COMPLETED and row.finished_at is None:
                row.finished_at = time.time()
            session.add(row)
            if run.status is RunStatus.STARTING:  # the report can beat flwr run's answer
                run.status = RunStatus.RUNNING
                session.add(run)
            if report.status is RoundStatus.COMPLETED:
                entry = audit_entry(f"run:{run_id}", "round.completed", f"run:{run_id}", "ok",
                                    f"round {number}")  # fmt: skip
                session.add(entry)
                note(session, entry, run=run_id, round=number, participants=row.participants,
                     accepted=row.metrics.get("accepted"), rejected=row.metrics.get("rejected"),
                     bytes_up=row.bytes_up, bytes_down=row.bytes_down)  # fmt: skip
            try:
                session.commit()
            except IntegrityError as exc:  # the same round reported twice at once
                raise ConflictError(f"round {number} of run {run_id} was reported twice") from exc
            session.refresh(row)
            return row

    def report_model(self, run_id: str, token: str | None, report: RunModelReport) -> Run:
        """Store the final model as a candidate version, whose parent is the version in
        production when the run started; the run is completed, then ``on_model`` runs."""
        blob = decode_model(report.onnx_base64)
        with Session(self.engine) as session:
            run = self._reporting(session, run_id, token)
            done = session.exec(
                select(Round).where(Round.run_id == run_id, Round.status == RoundStatus.COMPLETED)
            ).all()
            if len(done) < run.num_rounds:
                raise ConflictError(
                    f"run {run_id} has {len(done)} of {run.num_rounds} rounds completed"
                )
            digest = self.store.put(blob)
            start = session.exec(select(RunStart).where(RunStart.run_id == run_id)).first()
            model = ModelVersion(
                parent_id=None if start is None else start.baseline_model_id,
                sha256=digest,
                size=len(blob),
                metrics=report.metrics,
                note=f"federated run {run_id}: {run.num_rounds} rounds, {run.strategy}",
                created_at=time.time(),
                created_by=f"run:{run_id}",
            )
            session.add(model)
            try:
                session.flush()
            except IntegrityError as exc:
                raise ConflictError(f"a model version with sha256 {digest} exists") from exc
            run.model_version_id = model.id
            run.status, run.finished_at = RunStatus.COMPLETED, time.time()
            session.add(run)
            parent = "" if model.parent_id is None else f", parent model:{model.parent_id}"
            session.add(audit_entry(f"run:{run_id}", "model.from_run", f"model:{model.id}", "ok",
                                    digest + parent))  # fmt: skip
            session.commit()
            session.refresh(run)
        log.info(
            "run %s completed: model:%s", run_id, run.model_version_id,
            extra={"event": "run.completed", "run": run_id, "model": run.model_version_id,
                   "rounds": run.num_rounds},
        )  # fmt: skip
        self.forget_keys(run_id)
        if self.on_model is not None and run.model_version_id is not None:
            try:
                self.on_model(run.model_version_id)
            except Exception:  # the model is stored; a failed promotion is not the run's
                log.exception("after the model of run %s", run_id)
        return run

    def report_failure(self, run_id: str, token: str | None, detail: str) -> Run:
        """The run failed; its open round, which will not complete, is ``interrupted``."""
        now = time.time()
        with Session(self.engine) as session:
            run = self._reporting(session, run_id, token)
            session.connection().execute(
                update(Round)
                .where(col(Round.run_id) == run_id, col(Round.status) == RoundStatus.RUNNING)
                .values(status=RoundStatus.INTERRUPTED, finished_at=now)
            )
            run.status, run.finished_at, run.detail = RunStatus.FAILED, now, detail[:500]
            session.add(run)
            session.add(audit_entry(f"run:{run_id}", "run.failed", f"run:{run_id}", "ok", detail))
            session.commit()
            session.refresh(run)
        self.forget_keys(run_id)
        return run


def _summary(spec: RunCreate) -> str:
    return f"{spec.num_rounds} rounds, {spec.strategy}, codec {spec.codec}"
