"""The shipped systemd units pass systemd-analyze with the venv's real fedge binary."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
_ANALYZE = shutil.which("systemd-analyze")

pytestmark = pytest.mark.skipif(_ANALYZE is None, reason="systemd-analyze is not installed")


def _render(unit: Path, tmp_path: Path) -> Path:
    """Point ExecStart at this venv's fedge (or flower-superlink) so verify checks a
    binary that exists."""
    text = unit.read_text().replace("/usr/local/bin/", f"{Path(sys.executable).parent}/")
    out = tmp_path / unit.name
    out.write_text(text)
    return out


@pytest.mark.parametrize("unit", sorted(_UNITS.glob("*.service")), ids=lambda p: p.name)
def test_unit_verifies_clean(unit: Path, tmp_path: Path) -> None:
    rendered = _render(unit, tmp_path)
    assert _ANALYZE is not None
    done = subprocess.run(
        [_ANALYZE, "verify", "--man=no", str(rendered)],
        capture_output=True,
        text=True,
        check=False,
    )
    # verify prints nothing for a clean unit: any line is a warning or an error.
    report = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, done.stdout + done.stderr
    assert report == "", report


@pytest.mark.parametrize("unit", sorted(_UNITS.glob("*.service")), ids=lambda p: p.name)
def test_unit_exposure_is_ok(unit: Path, tmp_path: Path) -> None:
    """The hardening keeps systemd's own exposure score in its "OK" band (<= 3.0)."""
    rendered = _render(unit, tmp_path)
    assert _ANALYZE is not None
    done = subprocess.run(
        [_ANALYZE, "security", "--offline=yes", "--no-pager", str(rendered)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found is not None, done.stdout + done.stderr
    assert float(found.group(1)) <= 3.0, done.stdout
