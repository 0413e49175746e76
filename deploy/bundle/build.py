"""Build the gNB inference agent as one self-contained artefact (``make agent-bundle``).

``pyinstaller`` (the shipped form) is one directory holding its own interpreter, fedge's
agent code, ONNX Runtime, paho-mqtt, cryptography and the shared libraries they load;
``shiv`` (measured against it) is one zipapp that needs a Python 3.11 on the host.
Builds are cached under ``build/bundle/`` keyed on a hash of the agent's sources, the
spec and the versions of everything bundled, so a repeated build (or test run) reuses
the last one. Prints the artefact's path on stdout.

    python deploy/bundle/build.py [--tool pyinstaller|shiv] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["TOOLS", "build", "cache_key"]

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "deploy" / "bundle"
CACHE = ROOT / "build" / "bundle"
TOOLS = ("pyinstaller", "shiv")
# fedge's packages the agent role runs (fedge/ links the others in; they are excluded).
SOURCES = ("fedge/__init__.py", "fedge/__main__.py", "fedge/_cli.py", "fedge/_errors.py",
           "fedge/core", "edge_agent", "security", "models", "pyproject.toml")  # fmt: skip
BUNDLED = ("numpy", "cryptography", "typer", "click", "rich", "paho-mqtt", "onnxruntime",
           "prometheus-client", "pyinstaller", "pyinstaller-hooks-contrib", "shiv")  # fmt: skip


class BuildError(RuntimeError):
    """The bundle tool is missing or failed; the message says which and why."""


def cache_key(tool: str) -> str:
    """A hash of what the artefact is made of: sources, spec, interpreter, dependencies."""
    h = hashlib.sha256(f"{tool}\0{sys.version}\0".encode())
    files = sorted(HERE.glob("*.py")) + sorted(HERE.glob("*.spec"))
    for entry in SOURCES:
        path = ROOT / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    for dist in BUNDLED:
        try:
            h.update(f"{dist}=={metadata.version(dist)}\0".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist} absent\0".encode())
    return h.hexdigest()[:16]


def _run(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("wb") as out:
        done = subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, check=False
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise BuildError(f"{cmd[2] if cmd[1] == '-m' else cmd[0]} failed ({log}):\n{tail}")


def _pyinstaller(work: Path) -> Path:
    if shutil.which("pyinstaller", path=str(Path(sys.executable).parent)) is None:
        raise BuildError("PyInstaller is not installed: pip install -e '.[dev]'")
    _run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
          "--distpath", str(work / "dist"), "--workpath", str(work / "work"),
          str(HERE / "fedge-agent.spec")], work / "build.log")  # fmt: skip
    shutil.rmtree(work / "work")
    made = work / "dist" / "fedge"
    _strip_debug(made)
    return made


def _strip_debug(tree: Path) -> None:
    """Drop debug sections (the interpreter's libpython alone carries 17 MB of them).
    PyInstaller's own ``strip`` also rewrites the wheels' auditwheel-patched libraries in
    ``*.libs/``, which then fail to load, so those are left as they are."""
    strip = shutil.which("strip")
    if strip is None:
        return
    libs = [p for p in tree.rglob("*.so*")
            if p.is_file() and not p.is_symlink()
            and not any(d.name.endswith(".libs") for d in p.parents)]  # fmt: skip
    for lib in libs:
        subprocess.run([strip, "--strip-debug", str(lib)], check=True, capture_output=True)


def _shiv(work: Path) -> Path:
    if shutil.which("shiv", path=str(Path(sys.executable).parent)) is None:
        raise BuildError("shiv is not installed: pip install -e '.[dev]'")
    out = work / "fedge-agent.pyz"
    # The host's Python runs it: Debian's python3 is 3.11, the ABI of the bundled wheels.
    _run([sys.executable, "-m", "shiv", "--reproducible", "--compressed",
          "-p", "/usr/bin/env python3", "-e", "fedge._cli:main", "-o", str(out),
          "--no-build-isolation", f"{ROOT}[agent]"], work / "build.log")  # fmt: skip
    return out


def build(tool: str = "pyinstaller") -> Path:
    """The cached artefact for ``tool``, built first if its sources changed."""
    if tool not in TOOLS:
        raise BuildError(f"unknown bundle tool {tool!r}: one of {', '.join(TOOLS)}")
    work = CACHE / f"{tool}-{cache_key(tool)}"
    artefact = work / ("dist/fedge" if tool == "pyinstaller" else "fedge-agent.pyz")
    if (work / "complete").exists() and artefact.exists():
        return artefact
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    made = _pyinstaller(work) if tool == "pyinstaller" else _shiv(work)
    (work / "complete").write_text(tool + "\n")
    for stale in CACHE.glob(f"{tool}-*"):  # keep one build per tool
        if stale != work:
            shutil.rmtree(stale, ignore_errors=True)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", choices=TOOLS, default="pyinstaller")
    parser.add_argument("--out", type=Path, help="copy the artefact here (replacing it)")
    args = parser.parse_args()
    try:
        made = build(args.tool)
    except BuildError as exc:
        sys.exit(f"error: {exc}")
    if args.out is not None:
        shutil.rmtree(args.out, ignore_errors=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if made.is_dir():
            shutil.copytree(made, args.out, symlinks=True)
        else:
            shutil.copy2(made, args.out)
        made = args.out
    print(made)


if __name__ == "__main__":
    main()
