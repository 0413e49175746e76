"""The coordinator's state changes, one transaction each, each with its audit entry.

Routes stay thin: they authenticate, call one method here, and shape the answer.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from fedge.coordinator._access import (
    Operator,
    OperatorCache,
    SiteRequests,
    key_hash,
    new_api_key,
)
from fedge.coordinator._actions import AckBatch, ActionBook, ActionNotifier, ActionRecord
from fedge.coordinator._audit import audit_entry
from fedge.coordinator._db import WalCheckpointer, open_database, read_only
from fedge.coordinator._decision_log import DecisionLog
from fedge.coordinator._errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    SettingsError,
)
from fedge.coordinator._health import write_forecasts
from fedge.coordinator._leader import Leadership
from fedge.coordinator._live_decisions import LiveDecisions
from fedge.coordinator._registry import DatabaseRegistry
from fedge.coordinator._retraining import RetrainingPolicy, retrain_run_request
from fedge.coordinator._rollout import Rollouts, assigned_model_id, version_name
from fedge.coordinator._runs import Federation
from fedge.coordinator._schema import (
    ApiKey,
    ApiKeyCreate,
    AuditEntry,
    DecisionKind,
    EnrollmentToken,
    Forecast,
    ForecastBatch,
    ModelStatus,
    ModelVersion,
    ModelVersionCreate,
    Role,
    Round,
    Site,
    SiteState,
)
from fedge.coordinator._settings import CoordinatorSettings
from fedge.coordinator._store import ModelStore, decode_model
from fedge.coordinator._telemetry import Telemetry
from fedge.coordinator._topology import (
    Topology,
    TopologyAnswer,
    TopologyStore,
    load_topology_file,
)
from fedge.core import ModelBundle
from fedge.decisions import DecisionError, DecisionService, PolicyError, UnknownSiteError
from fedge.security import (
    ContentType,
    EnrollmentAuthority,
    KeyDirectory,
    KeyStoreError,
    OneShotSealer,
    SiteIdentity,
    load_identity,
    save_identity,
    token_hash,
)

BOOTSTRAP_KEY_NAME = "bootstrap-admin"


def _identity(settings: CoordinatorSettings) -> SiteIdentity:
    """The coordinator's own post-quantum identity; created on first start."""
    kek = settings.kek.get_secret_value().encode()
    path = settings.identity_file
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_identity(path, SiteIdentity.generate(), kek)
        return load_identity(path, kek)
    except (KeyStoreError, OSError) as exc:
        raise SettingsError(f"coordinator identity {path}: {exc}") from exc


class Coordinator:
    """Database, model store, identity and the enrollment authority of one coordinator."""

    def __init__(self, settings: CoordinatorSettings, *, recover: bool = True) -> None:
        """``recover``: interrupt the runs a previous process left live (once per start:
        with several worker processes only the parent does it)."""
        self.settings = settings
        retrain_spec = retrain_run_request(settings)  # a bad one stops us before anything runs
        self.identity = _identity(settings)
        self.store = ModelStore(settings.model_store)
        self.engine: Engine = open_database(settings.database_url)
        self.reader = read_only(self.engine)  # for transactions that only read
        self.telemetry = Telemetry(settings, self.reader)  # GET /metrics
        self.registry = DatabaseRegistry(self.engine)
        self.directory = KeyDirectory(self.registry)
        self.authority = EnrollmentAuthority(self.identity, self.directory)
        self._sealer = OneShotSealer(self.identity)
        self._ensure_bootstrap_admin()
        self.decisions = self._decision_service(settings.policy_dir)
        self._sites_synced = time.monotonic()
        self.decision_log = DecisionLog(self.engine)
        self._site_sync: Future[None] | None = None
        self._site_sync_lock = threading.Lock()
        self._checkpointer = (
            WalCheckpointer(self.engine) if self.engine.dialect.name == "sqlite" else None
        )
        self.federation = Federation(settings, self.engine, self.store, self.identity)
        # Only the leader runs the schedulers below (started by _lead); every replica serves.
        self.leadership = Leadership(
            self.engine, self._lead, self._follow, self._sweep_runs,
            released=self.federation.forget_keys,
        )  # fmt: skip
        self.federation.holder = self.leadership.hold_run
        self.telemetry.leader = lambda: self.leadership.elected
        if recover:  # runs a previous process (or a replica now gone) left live
            if self.leadership.distributed:
                self._sweep_runs()
            else:
                self.federation.recover()
        self._operators = OperatorCache(self.reader)
        window = settings.replay_window_seconds
        self.site_requests = SiteRequests(self.engine, self.directory, window)
        self.rollouts = Rollouts(settings, self.engine, self.reader)
        self.retraining = RetrainingPolicy(
            settings, self.engine, self.federation, self.promote, retrain_spec
        )
        self.federation.on_model = self.retraining.consider
        # --- live decisions ---
        self.action_book = ActionBook(self.engine, self.reader)
        self.action_notifier = ActionNotifier(self.action_book.newest_id)
        self.topology_store = TopologyStore(self.engine, self.reader)
        self.live: LiveDecisions | None = None
        if settings.topology_file is not None:  # the file is put in force at every start
            try:
                topology = load_topology_file(settings.topology_file)
                self.topology_store.put("settings", topology, enrolled_only=False)
            except Exception:
                self.close()  # the threads started above
                raise
        if self.decisions is not None:
            self.live = LiveDecisions(
                settings,
                self.engine,
                self.reader,
                self.decisions,
                self.identity,
                self.topology_store,
                self.action_notifier,
                self.sync_decision_sites,
                self.telemetry,
            )
        self.leadership.start()  # SQLite: the leader now; PostgreSQL: once elected

    def _lead(self) -> None:
        """This replica was elected: the rollout timeouts (which fire even when no site
        calls), retraining (only when enabled and a SuperLink is set), decision ticks."""
        self.rollouts.start()
        self.retraining.start()
        if self.live is not None:
            self.live.start()

    def _follow(self) -> None:
        """No longer the leader: the schedulers stop before another replica's start."""
        if self.live is not None:
            self.live.stop()
        self.retraining.stop()
        self.rollouts.stop()

    def _sweep_runs(self) -> None:
        """Interrupt the live runs no replica drives (its replica died or restarted)."""
        orphaned = self.leadership.orphaned(self.federation.live_ids())
        self.federation.interrupt(orphaned, self.federation.ORPHANED)

    def close(self) -> None:
        self.leadership.stop()
        if self.live is not None:
            self.live.stop()
        self.retraining.stop()
        self.rollouts.stop()
        self.decision_log.close()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()

    def _decision_service(self, policy_dir: Path | None) -> DecisionService | None:
        """The DQN/PPO policies, serving the active enrolled sites (by hex site id)."""
        if policy_dir is None:
            return None
        active = [s.id for s in self.sites(SiteState.ACTIVE)]
        try:
            return DecisionService(policy_dir, active)
        except PolicyError as exc:
            raise SettingsError(f"decision policies: {exc}") from exc

    # --- audit -------------------------------------------------------------------------

    _entry = staticmethod(audit_entry)

    def audit(
        self, actor: str, action: str, target: str = "", outcome: str = "ok", detail: str = ""
    ) -> None:
        """Append one entry in its own transaction (denials, which change nothing else)."""
        with Session(self.engine) as session:
            session.add(self._entry(actor, action, target, outcome, detail))
            session.commit()

    def audit_log(self, limit: int, after_id: int) -> Sequence[AuditEntry]:
        with Session(self.reader) as session:
            query = (
                select(AuditEntry)
                .where(col(AuditEntry.id) > after_id)
                .order_by(col(AuditEntry.id))
                .limit(limit)
            )
            return session.exec(query).all()

    # --- operator keys -----------------------------------------------------------------

    def _ensure_bootstrap_admin(self) -> None:
        """The settings' admin key is always a valid admin key (and the only one at first)."""
        digest = key_hash(self.settings.admin_api_key.get_secret_value())
        with Session(self.engine) as session:
            row = session.exec(select(ApiKey).where(ApiKey.name == BOOTSTRAP_KEY_NAME)).first()
            if row is not None and row.key_hash == digest:
                return
            if row is None:
                row = ApiKey(
                    name=BOOTSTRAP_KEY_NAME,
                    role=Role.ADMIN,
                    key_hash=digest,
                    created_at=time.time(),
                )
            row.key_hash, row.revoked = digest, False
            session.add(row)
            session.add(self._entry("settings", "api_key.bootstrap", BOOTSTRAP_KEY_NAME, "ok", ""))
            session.commit()

    def operator(self, key: str | None) -> Operator:
        return self._operators.authenticate(key)

    def cached_operator(self, key: str | None) -> Operator | None:
        """The key's operator if it was checked within the cache's lifetime (no I/O)."""
        return self._operators.cached(key)

    def create_api_key(self, by: Operator, spec: ApiKeyCreate) -> tuple[ApiKey, str]:
        key = new_api_key()
        with Session(self.engine) as session:
            row = ApiKey(
                name=spec.name, role=spec.role, key_hash=key_hash(key), created_at=time.time()
            )
            session.add(row)
            session.add(self._entry(by.actor, "api_key.create", spec.name, "ok", spec.role.value))
            try:
                session.commit()
            except IntegrityError as exc:
                raise ConflictError(f"an API key named {spec.name!r} exists") from exc
            session.refresh(row)
            return row, key

    def revoke_api_key(self, by: Operator, key_id: int) -> ApiKey:
        with Session(self.engine) as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                raise NotFoundError(f"no API key {key_id}")
            if row.name == BOOTSTRAP_KEY_NAME:
                raise ConflictError("the bootstrap key is set in the settings; change it there")
            row.revoked = True
            session.add(row)
            session.add(self._entry(by.actor, "api_key.revoke", row.name, "ok", ""))
            session.commit()
            self._operators.clear()
            session.refresh(row)
            return row

    def api_keys(self) -> Sequence[ApiKey]:
        with Session(self.reader) as session:
            return session.exec(select(ApiKey).order_by(col(ApiKey.id))).all()

    # --- enrollment and sites ----------------------------------------------------------

    def issue_token(self, by: Operator, ttl_seconds: float) -> tuple[str, float]:
        now = time.time()
        token = self.authority.issue_token(ttl_seconds, now)
        with Session(self.engine) as session:
            row = session.get(EnrollmentToken, token_hash(token).hex())
            assert row is not None  # stored by issue_token() just above
            row.created_by = by.actor[:64]
            session.add(row)
            session.add(self._entry(by.actor, "enrollment.token", "", "ok", f"ttl {ttl_seconds} s"))
            session.commit()
        return token, now + ttl_seconds

    def enroll_begin(self, request: bytes) -> bytes:
        """The challenge for the site; the token is checked here and spent by ``complete``.
        Audited once per challenge: a repeated (or replayed) request writes nothing."""
        pending, new = self.authority.start(request)
        if new:
            self.audit(
                "anonymous", "enrollment.begin", pending.site_id.hex(), "ok", "challenge issued"
            )
        return pending.challenge

    def enroll_complete(
        self, site_id: bytes, proof: bytes, archetype: str | None, region: str | None
    ) -> Site:
        self.authority.complete(site_id, proof)
        with Session(self.engine) as session:
            row = session.get(Site, site_id.hex())
            assert row is not None  # registered by complete() just above
            row.archetype, row.region, row.last_seen = archetype, region, time.time()
            session.add(row)
            session.add(
                self._entry(f"site:{site_id.hex()}", "site.enroll", site_id.hex(), "ok", "")
            )
            session.commit()
            session.refresh(row)
        if self.decisions is not None:
            self.decisions.add_sites([row.id])
        return row

    def sites(self, status: SiteState | None) -> Sequence[Site]:
        with Session(self.reader) as session:
            query = select(Site).order_by(col(Site.enrolled_at))
            if status is not None:
                query = query.where(Site.status == status)
            return session.exec(query).all()

    def site(self, site_hex: str) -> Site:
        with Session(self.reader) as session:
            row = session.get(Site, site_hex)
            if row is None:
                raise NotFoundError(f"no site {site_hex}")
            return row

    def revoke_site(self, by: Operator, site_hex: str) -> Site:
        with Session(self.engine) as session:
            row = session.get(Site, site_hex)
            if row is None:
                raise NotFoundError(f"no site {site_hex}")
            if row.status is SiteState.REVOKED:
                raise ConflictError(f"site {site_hex} is already revoked")
            row.status = SiteState.REVOKED
            session.add(row)
            session.add(self._entry(by.actor, "site.revoke", site_hex, "ok", ""))
            session.commit()
            session.refresh(row)
        if self.decisions is not None:
            self.decisions.remove_sites([site_hex])
        return row

    def rotate_site(self, site_id: bytes, statement: bytes) -> Site:
        """Accept a rotation statement from the site itself (signed by its old and its new
        key, generation + 1, ``KeyDirectory.rotate``); the old keys stay valid for
        ``rotation_grace_seconds``. Stored only if the keys did not change meanwhile."""
        from fedge.coordinator._registry import to_record
        from fedge.security import MemoryRegistry, SecurityError

        site_hex, now = site_id.hex(), time.time()
        try:
            record = self.directory.record(site_id)
            if len(statement) >= 16 and statement[:16] != site_id:  # it leads the new keys
                raise InvalidInputError("the rotation statement names another site")
            snapshot = MemoryRegistry()
            snapshot.put_site(record)
            rules = KeyDirectory(snapshot, grace_seconds=self.settings.rotation_grace_seconds)
            rotated = rules.rotate(statement, now)
        except (SecurityError, InvalidInputError) as exc:
            self.audit(f"site:{site_hex}", "site.rotate", site_hex, "denied", str(exc))
            if isinstance(exc, InvalidInputError):
                raise
            raise InvalidInputError(f"rotation refused: {exc}") from exc
        with Session(self.engine) as session:
            row = session.get(Site, site_hex, with_for_update=True)
            if row is None or to_record(row) != record:  # a concurrent rotation or revocation
                raise ConflictError(f"the keys of site {site_hex} changed meanwhile; retry")
            row.generation = rotated.keys.generation
            row.public_keys = rotated.keys.to_bytes()
            row.previous_keys = record.keys.to_bytes()
            row.previous_until = rotated.previous_until
            session.add(row)
            session.add(
                self._entry(
                    f"site:{site_hex}",
                    "site.rotate",
                    site_hex,
                    "ok",
                    f"generation {record.keys.generation} -> {rotated.keys.generation}; "
                    f"generation {record.keys.generation} valid until {rotated.previous_until:.0f}",
                )
            )
            session.commit()
            session.refresh(row)
        self.site_requests.forget(site_id)  # this process reads the new keys at once
        return row

    def touch_site(self, site_id: bytes) -> None:
        """Record that the site was seen now (signed requests do it in their group commit)."""
        with self.engine.begin() as connection:
            connection.execute(
                update(Site).where(col(Site.id) == site_id.hex()).values(last_seen=time.time())
            )

    # --- model versions ----------------------------------------------------------------

    def models(self, status: ModelStatus | None) -> Sequence[ModelVersion]:
        with Session(self.reader) as session:
            query = select(ModelVersion).order_by(col(ModelVersion.id))
            if status is not None:
                query = query.where(ModelVersion.status == status)
            return session.exec(query).all()

    def model(self, model_id: int) -> ModelVersion:
        with Session(self.reader) as session:
            row = session.get(ModelVersion, model_id)
            if row is None:
                raise NotFoundError(f"no model version {model_id}")
            return row

    def upload_model(self, by: Operator, spec: ModelVersionCreate) -> ModelVersion:
        blob = decode_model(spec.onnx_base64)
        with Session(self.engine) as session:
            if spec.parent_id is not None and session.get(ModelVersion, spec.parent_id) is None:
                raise NotFoundError(f"parent model version {spec.parent_id} does not exist")
            digest = self.store.put(blob)
            row = ModelVersion(
                parent_id=spec.parent_id,
                metrics=spec.metrics,
                note=spec.note,
                sha256=digest,
                size=len(blob),
                created_at=time.time(),
                created_by=by.actor,
            )
            session.add(row)
            try:
                session.flush()
            except IntegrityError as exc:
                raise ConflictError(f"a model version with sha256 {digest} exists") from exc
            session.add(self._entry(by.actor, "model.upload", f"model:{row.id}", "ok", digest))
            session.commit()
            session.refresh(row)
            return row

    def _production(self, session: Session) -> ModelVersion | None:
        query = (
            select(ModelVersion)
            .where(ModelVersion.status == ModelStatus.PRODUCTION)
            .with_for_update()
        )
        return session.exec(query).first()

    def promote(self, by: Operator, model_id: int) -> ModelVersion:
        """Make a candidate the production version and start its staged rollout (a
        running one is superseded): canaries first, the rest once they accepted it."""
        now = time.time()
        with Session(self.engine) as session:
            serving = self.rollouts.supersede(session, by.actor, model_id, now)
            current = self._production(session)
            row = session.get(ModelVersion, model_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"no model version {model_id}")
            if row.status is not ModelStatus.CANDIDATE:
                raise ConflictError(
                    f"model version {model_id} is {row.status.value}, not a candidate"
                )
            if serving is None:  # else the superseded canary phase's fleet version
                serving = None if current is None else current.id
            if current is not None:
                current.status = ModelStatus.RETIRED
                session.add(current)
                session.flush()
            row.status, row.promoted_by, row.promoted_at = ModelStatus.PRODUCTION, by.actor, now
            row.replaced_id = serving
            session.add(row)
            try:
                session.flush()
            except IntegrityError as exc:  # a concurrent promotion won the unique index
                raise ConflictError("another promotion happened at the same time; retry") from exc
            session.add(
                self._entry(
                    by.actor,
                    "model.promote",
                    f"model:{model_id}",
                    "ok",
                    "" if current is None else f"retired model:{current.id}",
                )
            )
            self.rollouts.begin(session, by.actor, model_id, serving, now)
            session.commit()
            session.refresh(row)
            return row

    def rollback(self, by: Operator) -> ModelVersion:
        """Retire the production version and bring back the one it replaced; a running
        rollout of the retired version ends with it."""
        now = time.time()
        with Session(self.engine) as session:
            self.rollouts.lock(session)
            current = self._production(session)
            if current is None:
                raise ConflictError("no model version is in production")
            if current.replaced_id is None:
                raise ConflictError(f"model:{current.id} replaced nothing; nothing to roll back to")
            previous = session.get(ModelVersion, current.replaced_id, with_for_update=True)
            assert previous is not None  # ids are never deleted
            current.status = ModelStatus.RETIRED
            session.add(current)
            session.flush()
            previous.status, previous.promoted_by, previous.promoted_at = (
                ModelStatus.PRODUCTION,
                by.actor,
                now,
            )
            session.add(previous)
            session.add(
                self._entry(
                    by.actor,
                    "model.rollback",
                    f"model:{previous.id}",
                    "ok",
                    f"retired model:{current.id}",
                )
            )
            assert current.id is not None
            self.rollouts.end_by_rollback(session, by.actor, current.id, now)
            session.commit()
            session.refresh(previous)
            return previous

    def sealed_assigned_model(self, site_id: bytes, have: str | None) -> tuple[bytes | None, str]:
        """The version assigned to the site (see ``_rollout``) as a ``ModelBundle`` sealed
        to it, and its name; no bundle when the site already has it (``have``)."""
        site_hex = site_id.hex()
        with Session(self.reader) as session:
            model_id = assigned_model_id(session, site_hex)
            row = None if model_id is None else session.get(ModelVersion, model_id)
        if row is None or row.id is None:
            raise NotFoundError("no model version is assigned to this site or in production")
        version = version_name(row.id)
        if have == version:
            return None, version
        bundle = ModelBundle(version, self.store.get(row.sha256)).encode()
        keys = self.directory.keys(site_id)
        envelope = self._sealer.seal(keys, bundle, ContentType.GLOBAL_MODEL, round_id=row.id)
        self.rollouts.delivered(site_hex, row.id, time.time())
        self.audit(f"site:{site_hex}", "model.download", f"model:{row.id}", "ok", "")
        return envelope, version

    # --- decisions ---------------------------------------------------------------------

    def answer(
        self, kind: DecisionKind, site_ids: Sequence[str], observations: list[list[float]]
    ) -> tuple[str, list[str]]:
        """The policy version and each site's action as a JSON object, not yet recorded
        (see :meth:`record`). Encoded once here: the row and the answer share the text.
        The caller refreshes the known sites first (:meth:`refresh_decision_sites`)."""
        if self.decisions is None:
            raise ConflictError("no decision policies are configured (policy_dir)")
        try:
            if kind is DecisionKind.STRATEGIC:
                strategic = self.decisions.strategic(site_ids, observations)
                modes = [json.dumps({"mode": n}) for n in strategic.mode_names]
                return strategic.version, [modes[m] for m in strategic.modes.tolist()]
            tactical = self.decisions.tactical(site_ids, observations)
            if not np.isfinite(tactical.shares).all():
                raise DecisionError("the slice policy produced non-finite shares")
            # repr of a finite float is valid JSON, and 20x cheaper than json.dumps per row
            return tactical.version, [
                '{"shares": [' + ", ".join(map(repr, row)) + "]}"
                for row in tactical.shares.tolist()
            ]
        except UnknownSiteError as exc:
            raise NotFoundError(str(exc)) from exc
        except DecisionError as exc:
            raise InvalidInputError(str(exc)) from exc

    def record(
        self, kind: DecisionKind, site_ids: Sequence[str], version: str, actions: list[str]
    ) -> Future[int]:
        """Queue encoded answers for the next group commit; resolves once they are stored."""
        return self.decision_log.submit(site_ids, time.time(), version, kind.value, actions)

    SITE_SYNC_SECONDS = 2.0

    def refresh_decision_sites(self) -> Future[None] | None:
        """Start the due site sync in a thread, or join the one under way; None if neither.

        Every request that arrives while the sync runs waits for the same one: deciding
        before it lands would refuse a site enrolled through another worker."""
        with self._site_sync_lock:
            if self._site_sync is not None and not self._site_sync.done():
                return self._site_sync
            if time.monotonic() < self._sites_synced + self.SITE_SYNC_SECONDS:
                return None
            done: Future[None] = Future()
            self._site_sync = done

        def run() -> None:
            try:
                self.sync_decision_sites()
            except Exception as exc:  # the waiting requests fail with it (503 for a DB error)
                done.set_exception(exc)
            else:
                done.set_result(None)

        threading.Thread(target=run, name="decision-sites", daemon=True).start()
        return done

    def sync_decision_sites(self) -> None:
        """With several worker processes, sites enrolled or revoked through another worker
        reach this one's policies within ``SITE_SYNC_SECONDS`` (one indexed query)."""
        if self.decisions is None:
            return
        self._sites_synced = time.monotonic()
        with Session(self.reader) as session:
            active = set(session.exec(select(Site.id).where(Site.status == SiteState.ACTIVE)).all())
        known = self.decisions.sites
        self.decisions.add_sites(active - known)
        self.decisions.remove_sites(known - active)

    # --- forecasts ---------------------------------------------------------------------

    def ingest_forecasts(self, site_id: bytes, batch: ForecastBatch) -> int:
        """Store a site's batch (forecasts and actuals) in one transaction; rows already
        stored are skipped. Signed requests store theirs with their nonce instead
        (``SiteRequests``); this is the same write for callers inside the coordinator."""
        with self.engine.begin() as connection:
            return write_forecasts(connection, [(site_id.hex(), batch)], time.time())[0]

    def forecasts(self, site_hex: str | None, limit: int) -> Sequence[Forecast]:
        with Session(self.reader) as session:
            query = select(Forecast).order_by(col(Forecast.id).desc()).limit(limit)
            if site_hex is not None:
                query = query.where(Forecast.site_id == site_hex)
            return session.exec(query).all()

    # --- rounds ------------------------------------------------------------------------

    def rounds(self, run_id: str | None, limit: int) -> Sequence[Round]:
        with Session(self.reader) as session:
            query = select(Round).order_by(col(Round.id)).limit(limit)
            if run_id is not None:
                query = query.where(Round.run_id == run_id)
            return session.exec(query).all()

    # --- live decisions ----------------------------------------------------------------

    def topology(self) -> TopologyAnswer:
        return self.topology_store.get()

    def set_topology(self, by: Operator, topology: Topology) -> TopologyAnswer:
        """Replace the topology; every site it names must be enrolled."""
        return self.topology_store.put(by.actor, topology)

    def ack_actions(self, site_id: bytes, batch: AckBatch) -> int:
        return self.action_book.ack(site_id.hex(), batch)

    def actions(self, site_hex: str | None, limit: int) -> Sequence[ActionRecord]:
        return self.action_book.latest(site_hex, limit)
