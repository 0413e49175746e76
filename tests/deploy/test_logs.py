"""``--log-format``: a bad value is refused by both commands with one clear line and exit 2;
the text format is one readable line per record, its fields at the end; the JSON format
one object per line with the exception and its cause."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedge.core import LogFormat, configure_logging

FEDGE = str(Path(sys.executable).with_name("fedge"))


@pytest.mark.parametrize(
    "command", [["agent", "run"], ["coordinator", "serve"]], ids=["agent", "coordinator"]
)
def test_a_bad_log_format_is_refused_with_one_clear_error(
    tmp_path: Path, command: list[str]
) -> None:
    done = subprocess.run(
        [FEDGE, *command, "--log-format", "xml"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Invalid value for '--log-format': 'xml' is not one of 'text', 'json'." in done.stderr
    assert not (tmp_path / "agent.db").exists()  # refused before anything started


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """A stream the root logger writes to, the root's handlers restored afterwards."""
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def _fail() -> None:
    try:
        raise OSError("disk full")
    except OSError as exc:
        raise RuntimeError("could not store the batch") from exc


def test_json_lines_carry_the_fields_the_error_and_its_cause(
    logged: io.StringIO,
) -> None:
    stream = logged
    configure_logging(LogFormat.JSON, stream=stream)
    log = logging.getLogger("fedge.test")
    log.info("round %d finished", 3, extra={"event": "round.completed", "participants": 4})
    try:
        _fail()
    except RuntimeError:
        log.exception("ingest failed", extra={"event": "ingest.failed"})
    log.debug("not at INFO")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "info" and first["logger"] == "fedge.test"
    assert first["message"] == "round 3 finished"
    assert first["event"] == "round.completed" and first["participants"] == 4
    assert first["ts"].endswith("+00:00")
    assert second["level"] == "error" and second["event"] == "ingest.failed"
    assert second["error"] == "RuntimeError: could not store the batch"
    assert second["cause"] == "OSError: disk full"
    assert "Traceback" in second["traceback"]


def test_text_lines_are_readable_with_their_fields_at_the_end(
    logged: io.StringIO,
) -> None:
    stream = logged
    configure_logging(LogFormat.TEXT, stream=stream)
    logging.getLogger("fedge.test").warning(
        "run failed", extra={"event": "run.failed", "detail": "SuperNodes gone"}
    )
    [line] = stream.getvalue().splitlines()
    assert line.endswith(
        ' WARNING fedge.test: run failed event=run.failed detail="SuperNodes gone"'
    )


def test_configure_logging_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="'xml' is not a valid LogFormat"):
        configure_logging("xml")
