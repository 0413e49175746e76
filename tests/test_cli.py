from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fedge import FedgeError, MissingExtraError
from fedge._cli import COMMANDS, _load, _register, app, main

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
        "import sys, fedge, fedge.core, fedge.models, fedge.security, fedge.edge_agent;"
        "bad = [m for m in ('torch', 'ray', 'fastapi', 'flwr', 'pandas') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _imported(stderr: str) -> set[str]:
    return {
        line.split("|")[-1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_help_lists_every_command_without_importing_any() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fedge", "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for name, entry in COMMANDS.items():
        assert name in done.stdout and entry.help.split()[0] in done.stdout
    loaded = {m for m in _imported(done.stderr) if m.startswith("fedge.")}
    assert loaded <= {"fedge._cli", "fedge._errors"}, loaded


def test_the_command_table_repeats_each_commands_own_help() -> None:
    _register()
    for name, entry in COMMANDS.items():
        real = _load(name)
        assert real.name == name
        assert (real.help or "").strip().splitlines()[0] == entry.help, name


def test_the_table_names_every_command_each_module_registers() -> None:
    for module in {entry.module for entry in COMMANDS.values()}:
        holder = typer.Typer()
        importlib.import_module(module).register(holder)
        registered = set(typer.main.get_group(holder).commands)
        assert registered == {n for n, e in COMMANDS.items() if e.module == module}, module


def _without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``fedge *args`` in a process where ``module`` cannot be imported (as if not installed)."""
    code = (
        f"import sys; sys.modules[{module!r}] = None; sys.argv = ['fedge', *{list(args)!r}];"
        "from fedge._cli import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("module", "args", "extra"),
    [
        ("torch", ["simulate", "--preset", "smoke"], "sim"),
        ("pandas", ["data", "export", "x.csv"], "sim"),
        ("stable_baselines3", ["decisions", "train", "--preset", "smoke"], "sim"),
        ("fastapi", ["coordinator", "serve"], "coordinator"),
        ("paho", ["agent", "check"], "agent"),
        ("prometheus_client", ["agent", "run"], "agent"),
    ],
)
def test_a_missing_extra_is_one_typed_line_naming_it(
    module: str, args: list[str], extra: str
) -> None:
    done = _without(module, *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"error: fedge {args[0]} needs the module {module!r}, which this install lacks: "
        f"pip install 'fedge[{extra}]'"
    )


def test_a_missing_base_dependency_names_the_plain_install() -> None:
    done = _without("cryptography", "keys", "show")
    assert done.returncode == 2
    assert "needs the module 'cryptography'" in done.stderr
    assert "pip install --force-reinstall fedge" in done.stderr


def test_a_missing_module_of_our_own_is_not_called_an_install_choice() -> None:
    done = _without("fedge.security._keystore", "keys", "show")
    assert done.returncode == 1
    assert "ModuleNotFoundError" in done.stderr and "pip install" not in done.stderr


def test_other_commands_need_no_extra_and_unknown_ones_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not _without("torch", "keys", "--help").returncode
    assert not _without("pandas", "agent", "--help").returncode
    assert run_main(["nope"], monkeypatch) == 2
    assert "No such command 'nope'" in capsys.readouterr().err


def test_missing_extra_is_a_fedge_error() -> None:
    error = MissingExtraError(command="agent", extra="agent", module="paho")
    assert isinstance(error, FedgeError)
    assert (error.command, error.extra, error.module) == ("agent", "agent", "paho")
