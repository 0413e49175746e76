from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedge._cli import app, main

runner = CliRunner()


def run_main(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "argv", ["fedge", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0)


def test_help_lists_only_working_commands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(["--help"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "simulate" in out and "data" in out and "keys" in out and "agent" in out
    assert "coordinator" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate", "--preset", "nope"], "unknown preset 'nope'"),
        (["simulate", "--methods", "fedavg,magic"], "unknown method"),
        (["simulate", "--name", "../escape"], "plain directory name"),
        (["simulate", "--sites", "0"], "num_sites"),
        (["simulate", "--rounds", "0", "--methods", "fedavg"], "num_rounds"),
    ],
)
def test_bad_simulate_arguments_exit_2_with_a_clear_line(
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    assert run_main([*args, "--runs-dir", str(tmp_path)], monkeypatch) == 2
    assert message in capsys.readouterr().err


def test_bad_data_file_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "k.csv"
    bad.write_text("timestamp,site_id\n2026-01-01T00:00:00Z,a\n")
    assert run_main(["simulate", "--data", str(bad), "--runs-dir", str(tmp_path)], monkeypatch) == 2
    assert "missing required column 'dl_prb_util'" in capsys.readouterr().err


def test_data_export_writes_the_import_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedge.simulation import read_kpi_file

    path = tmp_path / "out.csv"
    assert run_main(["data", "export", str(path), "--sites", "2", "--days", "3"], monkeypatch) == 0
    assert len(read_kpi_file(path)) == 2


def test_version() -> None:
    from fedge import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout


def test_light_packages_do_not_import_torch_ray_or_fastapi() -> None:
    # What the edge agent will import must stay light.
    code = (
        "import sys, models, simulation, security, fedge, edge_agent;"
        "bad = [m for m in ('torch', 'ray', 'fastapi', 'flwr') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
