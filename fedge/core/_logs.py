"""The processes' log lines: readable text for a terminal, or one JSON object per line for
a log pipeline (``--log-format json``), with the same fields either way.

A record's ``extra`` fields (``event`` first: what happened, a stable dotted name) go
into the JSON object as keys and at the end of a text line as ``key=value``."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TextIO

__all__ = ["LogFormat", "configure_logging", "log_fields"]

#: The attributes every ``LogRecord`` has; anything else on a record came from ``extra``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def log_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of ``record``, ``event`` first."""
    fields = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
    if "event" in fields:
        fields = {"event": fields.pop("event"), **fields}
    return fields


def _error_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The exception and its cause chain, each as ``type: message``."""
    if not record.exc_info or record.exc_info[1] is None:
        return {}
    exc: BaseException | None = record.exc_info[1]
    out: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}"}
    causes = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if exc is not None:
            causes.append(f"{type(exc).__name__}: {exc}")
    if causes:
        out["cause"] = causes[0] if len(causes) == 1 else causes
    return out


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "event"?, ...extra, "error"?, "cause"?,
    "traceback"?}``, one line; values JSON cannot hold are written as their ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in log_fields(record).items():
            line.setdefault(key, value)
        line.update(_error_fields(record))
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...`` and the traceback under it."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        text = super().formatMessage(record)
        fields = log_fields(record)
        if fields:
            text += " " + " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        return text


def _text(value: object) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c.isspace() or c == '"' for c in text)) else text


def configure_logging(
    fmt: LogFormat | str = LogFormat.TEXT, level: int = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """One handler on the root logger (any earlier ones replaced), writing to ``stream``
    (stderr by default); the handler, so a caller can remove it."""
    chosen = LogFormat(fmt)  # ValueError names a bad value; the CLIs refuse it before
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen is LogFormat.JSON else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
