"""The import-linter contracts hold on the tree, and they bite when a layer is crossed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy_tree(tmp: Path) -> Path:
    """The package tree (symlinked subpackages resolved) and the contracts, nothing else."""
    shutil.copytree(
        ROOT / "fedge",
        tmp / "fedge",
        symlinks=False,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    return tmp


def test_the_tree_keeps_every_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_the_agent_importing_the_simulation_breaks_a_contract(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    probe = tree / "fedge" / "edge_agent" / "_probe.py"
    probe.write_text(
        '"""A deliberate layer violation."""\n\nimport fedge.simulation  # noqa: F401\n'
    )
    result = _lint(tree)
    assert result.returncode != 0
    out = result.stdout
    assert "no production package imports the simulation BROKEN" in out
    assert "fedge.edge_agent._probe -> fedge.simulation" in out
    assert "layers:" in out and "BROKEN" in out.split("layers:")[1].split("\n\n")[0]


def test_the_agent_importing_torch_breaks_a_contract(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    (tree / "fedge" / "edge_agent" / "_probe.py").write_text("import torch  # noqa: F401\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "the edge agent runs without the training, simulation or service stacks BROKEN" in (
        result.stdout
    )


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(
        "fedge", include_external_packages=True, exclude_type_checking_imports=True
    )


def test_the_core_imports_only_the_standard_library_and_numpy(graph: grimp.ImportGraph) -> None:
    core = {m for m in graph.modules if m == "fedge.core" or m.startswith("fedge.core.")}
    assert "fedge.core._kpi" in core
    outside = {
        imported.split(".")[0]
        for m in core
        for imported in graph.find_modules_directly_imported_by(m)
        if imported != "fedge" and not imported.startswith("fedge.")
    }
    third_party = outside - set(sys.stdlib_module_names) - {"numpy"}
    assert not third_party, f"fedge.core imports {sorted(third_party)}"
    inside = {
        imported
        for m in core
        for imported in graph.find_modules_directly_imported_by(m)
        if imported.startswith("fedge.") and not imported.startswith("fedge.core")
    }
    assert inside <= {"fedge._errors"}, inside
