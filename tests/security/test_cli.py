"""``fedge keys``: happy paths and bad input through typer's CliRunner."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fedge.security import KeyDirectory, KeyStoreError, SiteIdentity, load_identity
from fedge.security._cli import register

runner = CliRunner()


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Root, so ``keys`` stays a sub-command."""

    register(app)
    return app


@pytest.fixture(autouse=True)
def _kek(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDGE_KEK", "cli test passphrase")


def test_init_show_rotate(app: typer.Typer, tmp_path: Path) -> None:
    key = tmp_path / "site.key"
    result = runner.invoke(app, ["keys", "init", "--key-file", str(key)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    site_id = load_identity(key, b"cli test passphrase").site_id.hex()
    assert site_id in result.output

    shown = runner.invoke(app, ["keys", "show", "--key-file", str(key)])
    assert shown.exit_code == 0 and site_id in shown.output and "generation:  0" in shown.output

    statement = tmp_path / "rotation.bin"
    rotated = runner.invoke(
        app, ["keys", "rotate", "--key-file", str(key), "--statement", str(statement)]
    )
    assert rotated.exit_code == 0, rotated.output
    assert site_id in rotated.output and "generation:  1" in rotated.output
    identity = load_identity(key, b"cli test passphrase")
    assert identity.previous is not None

    # the statement is what the registry needs to accept the new keys
    directory = KeyDirectory()
    directory.register(identity.previous.public_keys(), now=0.0)
    record = directory.rotate(statement.read_bytes(), now=0.0)
    assert record.keys == identity.public_keys()


def test_kek_file_option(app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDGE_KEK")
    kek = tmp_path / "kek"
    kek.write_text("passphrase in a file\n")
    key = tmp_path / "site.key"
    ok = runner.invoke(app, ["keys", "init", "--key-file", str(key), "--kek-file", str(kek)])
    assert ok.exit_code == 0, ok.output
    shown = runner.invoke(app, ["keys", "show", "--key-file", str(key), "--kek-file", str(kek)])
    assert shown.exit_code == 0


def test_existing_key_needs_force(app: typer.Typer, tmp_path: Path) -> None:
    key = tmp_path / "site.key"
    assert runner.invoke(app, ["keys", "init", "--key-file", str(key)]).exit_code == 0
    first = key.read_bytes()
    again = runner.invoke(app, ["keys", "init", "--key-file", str(key)])
    assert isinstance(again.exception, KeyStoreError) and "--force" in str(again.exception)
    assert key.read_bytes() == first
    forced = runner.invoke(app, ["keys", "init", "--key-file", str(key), "--force"])
    assert forced.exit_code == 0 and key.read_bytes() != first


def test_wrong_kek_missing_file_and_no_kek(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "site.key"
    assert runner.invoke(app, ["keys", "init", "--key-file", str(key)]).exit_code == 0
    monkeypatch.setenv("FEDGE_KEK", "some other passphrase")
    wrong = runner.invoke(app, ["keys", "show", "--key-file", str(key)])
    assert isinstance(wrong.exception, KeyStoreError)
    rotate = runner.invoke(app, ["keys", "rotate", "--key-file", str(key)])
    assert isinstance(rotate.exception, KeyStoreError)
    missing = runner.invoke(app, ["keys", "show", "--key-file", str(tmp_path / "absent.key")])
    assert isinstance(missing.exception, KeyStoreError)
    monkeypatch.delenv("FEDGE_KEK")
    no_kek = runner.invoke(app, ["keys", "init", "--key-file", str(tmp_path / "new.key")])
    assert isinstance(no_kek.exception, KeyStoreError)
    assert not (tmp_path / "new.key").exists()


def test_typed_errors_exit_2_through_main(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import fedge._cli as root

    fresh = typer.Typer(pretty_exceptions_enable=False)
    fresh.callback()(lambda: None)
    monkeypatch.setattr(root, "app", fresh)  # leave the real application untouched
    monkeypatch.setattr(root, "_register", lambda only=None: register(fresh))
    monkeypatch.setattr("sys.argv", ["fedge", "keys", "show", "--key-file", str(tmp_path / "x")])
    with pytest.raises(SystemExit) as exit_info:
        root.main()
    assert exit_info.value.code == 2
    assert "no key file" in capsys.readouterr().err


def test_show_never_prints_private_keys(app: typer.Typer, tmp_path: Path) -> None:
    key = tmp_path / "site.key"
    runner.invoke(app, ["keys", "init", "--key-file", str(key)])
    identity: SiteIdentity = load_identity(key, b"cli test passphrase")
    shown = runner.invoke(app, ["keys", "show", "--key-file", str(key)])
    assert identity.signing_key.private_bytes().hex() not in shown.output
    assert identity.kem_key.seed_bytes().hex() not in shown.output


def test_rotate_with_unwritable_statement_keeps_the_old_keys(
    app: typer.Typer, tmp_path: Path
) -> None:
    key = tmp_path / "site.key"
    assert runner.invoke(app, ["keys", "init", "--key-file", str(key)]).exit_code == 0
    before = key.read_bytes()
    bad = tmp_path / "missing-dir" / "statement.bin"
    result = runner.invoke(app, ["keys", "rotate", "--key-file", str(key), "--statement", str(bad)])
    assert isinstance(result.exception, KeyStoreError)
    assert "rotation statement" in str(result.exception)
    assert key.read_bytes() == before


def test_rotate_default_statement_path(app: typer.Typer, tmp_path: Path) -> None:
    key = tmp_path / "site.key"
    runner.invoke(app, ["keys", "init", "--key-file", str(key)])
    assert runner.invoke(app, ["keys", "rotate", "--key-file", str(key)]).exit_code == 0
    assert (tmp_path / "site.key.rotation-1").stat().st_size == 9966
