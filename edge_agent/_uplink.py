"""The agent's coordinator link: outbox upload, health, model pull, off the broker thread.

One thread (``fedge-uplink``) owns every exchange with the coordinator and every model
judgment: the broker link's thread only stores, forecasts and enqueues. It reads the
store through its own connection, so a slow or absent coordinator never delays a KPI.
Models arriving on the broker's ``…/model`` topic are judged here too (the shadow gate
takes about a second per candidate), and their acknowledgement goes back to the broker
thread only once the verdict is recorded.

Uploads follow the forecasts: the broker thread calls :meth:`Uplink.notify` after it
stored new rows, and the uplink sends them ``upload_interval_s`` later (the batching
window, 0.2 s by default): rows landing meanwhile travel in the same request, so a busy
agent sends at most one batch per window, and a backlog is sent batch after batch at
once. Rows no call announced (left by an earlier run) are swept every ``SWEEP_S``.

Failures: no answer or a 5xx backs off exponentially with jitter (up to 30 s) and
retries the same rows; a 400/409/413/422 for a batch means the batch itself is bad, so
its rows are marked refused (kept in the store, counted, never sent again) and the queue
keeps draining; a 401/403/404 (the site refused, or a route the coordinator lacks) is
treated like an outage, since the rows themselves are fine.
"""

from __future__ import annotations

import base64
import json as jsonlib
import logging
import math
import os
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedge.core import ApiError, SiteClient
from fedge.edge_agent._broker import Inbound, backoff_delay
from fedge.edge_agent._config import AgentConfig, CoordinatorConfig
from fedge.edge_agent._errors import AgentError, ConfigError, ModelRejected, StoreError
from fedge.edge_agent._forecast import ForecastEngine
from fedge.edge_agent._lifecycle import ModelManager, Verdict
from fedge.edge_agent._metrics import AgentMetrics
from fedge.edge_agent._opener import ModelOpener
from fedge.edge_agent._store import OutboxBatch, Store

__all__ = ["BACKOFF_MAX_S", "BACKOFF_MIN_S", "SWEEP_S", "SiteStatus", "Uplink", "UploadSchedule"]

log = logging.getLogger("fedge.agent.uplink")

#: Where the link's state is kept in the store (``Store.put_state``).
STATE_KEY = "uplink.state"
#: Longest pause between two tries of an unreachable coordinator.
BACKOFF_MAX_S = 30.0
#: The first pause after a failure; it doubles (with jitter) up to ``BACKOFF_MAX_S``.
BACKOFF_MIN_S = 1.0
#: How often the outbox is looked at without a :meth:`Uplink.notify`: rows an earlier run
#: left are sent at start and after each upload; this only bounds a missed notification.
SWEEP_S = 30.0
#: The forecast-error summary covers the agent's last day.
ERROR_WINDOW_S = 86_400.0
#: Statuses that say a batch itself is malformed: refused, never sent again.
_BAD_BATCH = frozenset({400, 409, 413, 422})
REASON_CHARS = 300
#: Longest the loop sleeps: how soon it sees ``stop``.
_IDLE_S = 0.5
_MODEL_HEADER = "x-fedge-model-version"
#: The coordinator's version names (``vN``); the agent's own (``initial-…``) stay local.
_VERSION = re.compile(r"v[1-9][0-9]{0,9}")
#: Most error rows one health report carries (shortest horizons first).
MAX_ERROR_ROWS = 512


@dataclass(frozen=True)
class SiteStatus:
    """What the broker thread knows that a health report carries."""

    alerts: Mapping[str, int]
    supernode: str  # absent, starting, running, restarting, failed


class _Outage(Exception):  # noqa: N818 - internal control flow, never leaves this module
    """The coordinator did not answer usefully: back off and retry the same work."""


class UploadSchedule:
    """When the next upload is due (monotonic seconds): ``window`` after rows landed,
    at once while a backlog drains, never before a back-off ends, else at the sweep."""

    def __init__(self, window: float, sweep: float, now: float) -> None:
        if not (math.isfinite(window) and window > 0):
            raise ConfigError(f"coordinator.upload_interval_s: must be > 0, got {window}")
        if not (math.isfinite(sweep) and sweep >= window):
            raise ConfigError(f"uplink sweep: at least the window ({window} s), got {sweep}")
        self.window, self.sweep = window, sweep
        self.due = now  # rows an earlier run left go at once
        self.hold = now  # no upload before this (a back-off)

    def landed(self, now: float) -> None:
        """New rows in the outbox: send them within the window (with any that follow)."""
        self.due = min(self.due, max(now + self.window, self.hold))

    def sent(self, now: float, more: bool) -> None:
        """An upload went: the next batch at once while rows wait, else at the sweep."""
        self.due = now if more else now + self.sweep

    def back_off(self, until: float) -> None:
        """No upload before ``until``; rows landing meanwhile wait for it too."""
        self.hold = until
        self.due = max(self.due, until)


#: The nice value of the uplink's thread: below the broker link's, which forecasts.
UPLINK_NICE = 10


def background_priority() -> None:
    """Lower this thread's CPU priority (Linux schedules threads as tasks, each with its
    own nice value): judging a candidate model takes a core for about a second, and on a
    small gNB host it must yield to the broker link's thread, which forecasts the KPIs."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), UPLINK_NICE))
    except (AttributeError, OSError) as exc:  # not Linux, or not permitted: run as is
        log.debug("uplink: cannot lower the thread's priority: %s", exc)


class Uplink:
    """The coordinator link and the model judge, on one thread of their own.

    ``publish`` and ``ack`` hand MQTT work back to the broker link's thread (paho's
    client is driven there); ``status`` reads the broker thread's counters."""

    def __init__(
        self,
        config: AgentConfig,
        models: ModelManager,
        metrics: AgentMetrics,
        *,
        publish: Callable[[str, bytes, bool], None],
        ack: Callable[[Inbound], None],
        status: Callable[[], SiteStatus],
        online: Callable[[], bytes],
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert config.security is not None
        self.config = config
        self.link: CoordinatorConfig | None = config.coordinator
        self.metrics = metrics
        self.clock = clock
        self._publish = publish
        self._ack = ack
        self._status = status
        self._online = online
        self._serving = models  # the broker thread's manager: what it forecasts with
        self.opener = ModelOpener(config)
        self.store = Store(
            config.store.path, synchronous=config.store.synchronous, outbox=self.link is not None
        )
        self.client: SiteClient | None = None
        self._key_stamp = _stamp(config.security.key_file)
        if self.link is not None:
            self.client = _site_client(config, self.link)
        self._jobs: queue.Queue[Inbound] = queue.Queue()
        self._halt = threading.Event()
        self._wake = threading.Event()  # a model to judge, or rows to send
        self._landed = threading.Event()  # rows to send: set by notify()
        self._thread = threading.Thread(target=self._run, name="fedge-uplink", daemon=True)
        self._rng = random.Random()
        self._failures = 0
        self._judged: set[str] = set()  # versions pulled and judged by this process
        self._lock = threading.Lock()
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.backlog = 0
        self.refused = 0
        self._saved = b""
        self.backoff_min_s = BACKOFF_MIN_S
        self.backoff_max_s = BACKOFF_MAX_S
        self.sweep_s = SWEEP_S

    # lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():  # a request past ``timeout`` still holds it
            self.store.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, message: Inbound) -> None:
        """A sealed model from the broker (called on the broker thread; never blocks)."""
        self._jobs.put(message)
        self._wake.set()

    def notify(self) -> None:
        """New rows in the outbox (called on the broker thread after its commit; never
        blocks): they are sent within ``upload_interval_s``."""
        self._landed.set()
        self._wake.set()

    def state(self) -> dict[str, object]:
        """The link as ``/healthz`` and ``agent check`` show it."""
        with self._lock:
            return {
                "coordinator": None if self.link is None else self.link.url,
                "last_success": self.last_success,
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
                "backlog": self.backlog,
                "refused": self.refused,
                "models_waiting": self._jobs.qsize(),
            }

    # the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        background_priority()
        now = time.monotonic()
        due = {"health": now, "model": now}
        uploads = None
        if self.link is not None:
            uploads = UploadSchedule(self.link.upload_interval_s, self.sweep_s, now)
        while not self._halt.is_set():
            self._reload_identity()  # a stat; the key is read only when the file changed
            self._judge_queued()
            if self.link is not None and uploads is not None:
                now = time.monotonic()
                if self._landed.is_set():
                    self._landed.clear()
                    uploads.landed(now)
                try:
                    if now >= uploads.due:
                        uploads.sent(now, self._upload())
                    if now >= due["model"]:
                        self._pull_model()
                        due["model"] = now + self.link.model_poll_s
                    if now >= due["health"]:
                        self._report_health()
                        due["health"] = now + self.link.health_interval_s
                    self._failures = 0
                except _Outage:
                    try:
                        self._save_state()
                    except StoreError as exc:
                        self._failed("store", exc)
                    pause = backoff_delay(
                        self._failures, self.backoff_min_s, self.backoff_max_s, self._rng
                    )
                    self._failures += 1
                    resume = time.monotonic() + pause
                    due = {key: max(at, resume) for key, at in due.items()}
                    uploads.back_off(resume)
                except StoreError as exc:  # the broker thread ends the run on its own
                    self._failed("store", exc)
                    uploads.back_off(time.monotonic() + BACKOFF_MAX_S)
                except Exception as exc:  # a bug costs this round, not the link
                    self._failed("uplink", exc)
                    uploads.back_off(time.monotonic() + self.backoff_min_s)
                wait = max(0.0, min(uploads.due, *due.values()) - time.monotonic())
            else:
                wait = _IDLE_S
            # new rows or a model from the broker wake the loop at once
            if self._wake.wait(min(max(wait, 0.01), _IDLE_S)):
                self._wake.clear()

    def _save_state(self) -> None:
        """The link's state in the store, for ``fedge agent check`` (another process)."""
        state = jsonlib.dumps(self.state(), sort_keys=True).encode()
        if state != self._saved:
            self.store.put_state(STATE_KEY, state)
            self._saved = state

    def _failed(self, stage: str, exc: Exception) -> None:
        log.error("uplink: unexpected failure (%s): %r", stage, exc, exc_info=exc)
        self.metrics.errors.labels(stage).inc()
        with self._lock:
            self.last_error = f"{type(exc).__name__}: {exc}"[:REASON_CHARS]
            self.last_error_at = self.clock()

    def _call(
        self,
        call: str,
        method: str,
        path: str,
        *,
        json: object | None = None,
        query: Mapping[str, str | int | float] | None = None,
        expect: frozenset[int] = frozenset(),
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One signed request; raises ``_Outage`` when the coordinator should be retried
        later, ``ApiError`` for a status in neither ``expect`` nor the outage set."""
        assert self.client is not None
        try:
            status, headers, body = self.client.request(method, path, json=json, query=query)
        except ApiError as exc:
            if exc.status in expect:
                self._answered(call, str(exc.status))
                return exc.status, {}, b""
            self.metrics.uplink_requests.labels(call, str(exc.status or "unreachable")).inc()
            with self._lock:
                self.last_error = f"{method} {path}: {exc}"[:REASON_CHARS]
                self.last_error_at = self.clock()
            if exc.status == 0 or exc.status >= 500 or exc.status in (401, 403, 404, 429):
                # the first failure of an outage is a warning; its retries are not news
                level = logging.WARNING if self._failures == 0 else logging.DEBUG
                log.log(level, "uplink: %s %s: %s", method, path, exc)
                raise _Outage(str(exc)) from exc
            raise
        self._answered(call, str(status))
        return status, headers, body

    def _reload_identity(self) -> None:
        """After ``fedge site rotate`` the key file holds the new generation: sign with it
        (the action poller shares the client) and open models sealed to it. The old key
        works only while the coordinator's rotation grace lasts."""
        assert self.config.security is not None
        stamp = _stamp(self.config.security.key_file)
        if stamp == self._key_stamp:
            return
        from fedge.security import SecurityError, load_identity, read_kek

        sec = self.config.security
        try:
            identity = load_identity(sec.key_file, read_kek(sec.kek_file))
            opener = ModelOpener(self.config)
        except (SecurityError, OSError, AgentError) as exc:
            log.error("uplink: cannot reload the site key after it changed: %s", exc)
            return
        if self.client is not None:
            self.client.signer = identity
        self.opener = opener
        self._key_stamp = stamp
        log.warning("uplink: the site key file changed (rotated); using it now")

    def _answered(self, call: str, outcome: str) -> None:
        self.metrics.uplink_requests.labels(call, outcome).inc()
        now = self.clock()
        self.metrics.uplink_last_success.set(now)
        with self._lock:
            self.last_success = now

    # the outbox -----------------------------------------------------------------------

    def _upload(self) -> bool:
        """Send the oldest batch; True while more rows wait (send the next one at once)."""
        assert self.link is not None
        self._count()  # the backlog shows during an outage too
        batch = self.store.outbox_batch(self.link.batch_max)
        # a batch carries at least one forecast: actuals travel with the next forecasts
        if batch.forecasts:
            try:
                self._call(
                    "forecasts", "POST", "/api/v1/site/forecasts", json=_forecast_body(batch)
                )
            except ApiError as exc:
                if exc.status not in _BAD_BATCH:
                    raise
                log.error(
                    "uplink: the coordinator refused a batch of %d forecasts and %d actuals "
                    "(kept in the store, not sent again): %s",
                    len(batch.forecasts),
                    len(batch.actuals),
                    exc,
                )
                self.store.outbox_refuse(batch.ids)
                self.metrics.uplink_rows.labels("forecast", "refused").inc(len(batch.forecasts))
                self.metrics.uplink_rows.labels("actual", "refused").inc(len(batch.actuals))
            else:
                self.store.outbox_ack(batch.ids)
                self.metrics.uplink_rows.labels("forecast", "sent").inc(len(batch.forecasts))
                self.metrics.uplink_rows.labels("actual", "sent").inc(len(batch.actuals))
        pending = self._count()
        self._save_state()
        return bool(batch.forecasts) and pending > 0

    def _count(self) -> int:
        pending, refused = self.store.outbox_counts()
        self.metrics.uplink_backlog.set(pending)
        self.metrics.uplink_refused.set(refused)
        with self._lock:
            self.backlog, self.refused = pending, refused
        return pending

    # health ---------------------------------------------------------------------------

    def health_report(self) -> dict[str, object]:
        """The body of ``POST /api/v1/site/health`` (docs/live-loop.md)."""
        now = self.clock()
        status = self._status()
        pending, _ = self.store.outbox_counts()
        serving = self._serving.serving
        return {
            "sent_at": now,
            "model_version": None if serving is None else serving.version,
            "store_bytes": self.store.size_bytes(),
            "alerts": {k: int(status.alerts.get(k, 0)) for k in ("warning", "critical")},
            "last_kpi_at": self.store.last_received(),
            "supernode": status.supernode,
            "backlog": pending,
            "errors": _error_rows(self.store, now),
        }

    def _report_health(self) -> None:
        try:
            self._call("health", "POST", "/api/v1/site/health", json=self.health_report())
        except ApiError as exc:  # a report the coordinator refuses: the next one is new
            log.error("uplink: the coordinator refused a health report: %s", exc)

    # models ---------------------------------------------------------------------------

    def _pull_model(self) -> None:
        serving = self._serving.serving
        have = None if serving is None else serving.version
        status, headers, body = self._call(
            "model",
            "GET",
            "/api/v1/site/model",
            query=None if have is None or not _VERSION.fullmatch(have) else {"have": have},
            expect=frozenset({304, 404}),
        )
        if status != 200:
            return
        version = next((v for k, v in headers.items() if k.lower() == _MODEL_HEADER), None)
        if version is None or not _VERSION.fullmatch(version):
            log.error("uplink: the coordinator's model carries no version name (%r)", version)
            return
        if version == have:
            return
        known = self.store.model(version)
        if known is not None:
            if known.state in ("retired", "rolled_back") and known.path.is_file():
                self._reinstate(version)
            return  # served again now, or rejected here before: nothing to judge
        if version in self._judged:
            return  # refused unopened by this process: its verdict was given
        self._judged.add(version)
        verdict = self.judge(body, version)
        verdict["version"] = version  # the verdict is on what the coordinator assigned
        try:
            self._call("verdict", "POST", "/api/v1/site/model/verdict", json=verdict)
        except ApiError as exc:
            log.error("uplink: the coordinator refused the verdict on %s: %s", version, exc)

    def _reinstate(self, version: str) -> None:
        """The coordinator assigns a version this agent served before (its fleet was rolled
        back): serve it again, without the shadow gate. The broker thread loads it from the
        store within a second, as after ``fedge agent rollback``."""
        with self._serving.lock:
            self.store.reinstate(version)
        log.warning("model %s serves again: the coordinator assigned it (rollback)", version)

    def _judge_queued(self) -> None:
        while not self._halt.is_set():
            try:
                message = self._jobs.get_nowait()
            except queue.Empty:
                return
            self._judge_message(message)

    def _judge_message(self, message: Inbound) -> None:
        try:
            verdict = self.judge(message.payload, None)
        finally:
            self._ack(message)  # the verdict is recorded: the broker may forget it
        version = verdict.get("version")
        if self.client is not None and isinstance(version, str) and _VERSION.fullmatch(version):
            try:  # the coordinator hears of it too; a version it did not assign is a 409
                self._call("verdict", "POST", "/api/v1/site/model/verdict", json=verdict)
            except (ApiError, _Outage) as exc:
                log.warning("uplink: verdict on %s not reported: %s", version, exc)

    def judge(self, envelope: bytes, version: str | None) -> dict[str, object]:
        """Open and shadow-judge one sealed model; whatever happens, a published verdict
        (its wire form for the coordinator is returned) and no exception."""
        try:
            verdict = self._judge(envelope)
        except ModelRejected as exc:
            self.metrics.verdicts.labels("refused").inc()
            body = _refused(version, str(exc))
        except Exception as exc:  # ModelManager records what it can judge; this is a bug
            log.error("unexpected failure (model), contained: %r", exc, exc_info=exc)
            self.metrics.errors.labels("model").inc()
            self.metrics.verdicts.labels("rejected").inc()
            reason = f"{type(exc).__name__}: {exc}"
            body = _refused(version, f"model could not be judged: {reason}")
        else:
            outcome = "accepted" if verdict.accepted else "rejected"
            self.metrics.verdicts.labels(outcome).inc()
            log.warning("model %s %s: %s", verdict.version, outcome, verdict.reason)
            body = verdict.to_json()
        self.metrics.messages_out.labels("verdict").inc()
        self._publish(self.config.topic("verdict"), _json(body), False)
        if body.get("accepted"):
            self._publish(self.config.topic("status"), self._online(), True)
        return {
            k: body.get(k)
            for k in ("version", "accepted", "reason", "candidate_score", "serving_score")
        } | {"windows": body.get("windows", 0)}

    def _judge(self, envelope: bytes) -> Verdict:
        bundle = self.opener.open(envelope)
        with self._serving.lock:
            # a fresh engine: its windows and scalers come from the store as it is now
            engine = ForecastEngine(
                self.store,
                self.config.step_seconds,
                self.config.anomaly,
                min_history=self.config.model.min_history,
            )
            data = engine.judging_data(self.config.model)  # shadow days (+ fitting days)
            # serving it is one reference swap the forecasting thread sees on its next batch
            verdict = self._serving.consider(bundle, data, self.store)
            if verdict.accepted:
                self.metrics.set_model(verdict.version)
        return verdict


def _refused(version: str | None, reason: str) -> dict[str, object]:
    return {"v": 1, "version": version, "accepted": False, "reason": reason[:REASON_CHARS]}


def _json(body: object) -> bytes:
    return jsonlib.dumps(body).encode()


def _forecast_body(batch: OutboxBatch) -> dict[str, Any]:
    """``POST /api/v1/site/forecasts``: one model version's forecasts, and actuals."""
    return {
        "model_version": batch.model_version or "none",
        "forecasts": [
            {"cell": f.cell, "step": f.step, "made_step": f.made_step, "values": list(f.values)}
            for f in batch.forecasts
        ],
        "actuals": [
            {"cell": a.cell, "step": a.step, "values": list(a.values)} for a in batch.actuals
        ],
    }


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_ino


def _site_client(config: AgentConfig, link: CoordinatorConfig) -> SiteClient:
    """A client that signs with the site's identity from [security]."""
    from fedge.security import SecurityError, load_identity, read_kek

    sec = config.security
    assert sec is not None
    try:
        identity = load_identity(sec.key_file, read_kek(sec.kek_file))
    except (SecurityError, OSError) as exc:
        raise AgentError(f"security: {exc}") from exc
    try:
        return SiteClient(link.url, identity, timeout=link.timeout_s, ca_file=link.ca_file)
    except ApiError as exc:
        raise AgentError(f"coordinator: {exc.detail}") from exc


def _error_rows(store: Store, now: float) -> list[dict[str, object]]:
    rows = [
        e
        for e in store.forecast_errors(now - ERROR_WINDOW_S)
        if e.horizon_steps >= 1 and all(map(math.isfinite, (e.mae, e.rmse, e.bias)))
    ]
    rows.sort(key=lambda e: (e.horizon_steps, e.cell, e.target))
    return [
        {
            "cell": e.cell,
            "horizon_steps": e.horizon_steps,
            "target": e.target,
            "count": e.count,
            "mae": e.mae,
            "rmse": e.rmse,
            "bias": e.bias,
        }
        for e in rows[:MAX_ERROR_ROWS]
    ]


def describe_link(config: AgentConfig) -> str:
    """``fedge agent check``: the site keys sign, the coordinator answers with the key
    stored at enrollment, and what the running agent last recorded of the link."""
    from fedge.core import CoordinatorClient

    link, sec = config.coordinator, config.security
    assert link is not None and sec is not None
    _site_client(config, link)  # the site's key file opens with the KEK
    try:
        client = CoordinatorClient(link.url, timeout=link.timeout_s, ca_file=link.ca_file)
        answer = client.get_json("/api/v1/enrollment/authority")
        served = base64.b64decode(str(answer["public_keys_base64"]), validate=True)
    except ApiError as exc:
        raise AgentError(f"coordinator: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise AgentError(f"coordinator: its key answer is malformed: {exc}") from exc
    try:
        stored = sec.coordinator_keys.read_bytes()
    except OSError as exc:
        raise AgentError(f"security.coordinator_keys: {exc}") from exc
    if served != stored:
        raise AgentError(
            f"coordinator: {link.url} presents another key than the one stored at enrollment"
        )
    store = Store(config.store.path, synchronous=config.store.synchronous)
    try:
        pending, refused = store.outbox_counts()
        saved = store.get_state(STATE_KEY)
    finally:
        store.close()
    try:
        last: dict[str, Any] = jsonlib.loads(saved) if saved else {}
    except ValueError:
        last = {}
    return (
        f"{link.url} (key matches), backlog {pending}, refused {refused}, "
        f"last success {last.get('last_success')}, last error {last.get('last_error')}"
    )
