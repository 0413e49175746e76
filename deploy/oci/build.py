"""Build fedge's OCI images without a container daemon (``make images``).

No base image can be pulled and no RUN step can execute where this builds, so the agent
image is ``FROM scratch`` with COPY only (agent.Containerfile): this script stages the
context (the PyInstaller agent directory, the system libraries its ELF files load
according to ``ldd``, the dynamic loader, a minimal /etc) and runs ``buildah build``
with chroot isolation on the vfs storage driver under ``build/oci/storage``. Prints the
image's name.

    python deploy/oci/build.py [--tag NAME]
"""

from __future__ import annotations

import argparse
import json
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["AGENT_IMAGE", "BuildError", "build_agent_image", "buildah", "image_size"]

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "deploy" / "oci"
STORAGE = ROOT / "build" / "oci"
AGENT_IMAGE = "localhost/fedge-agent:0.1.0"
UID = 10001  # the image's unprivileged fedge user
_LDD_LINE = re.compile(r"=>\s+(/\S+)\s+\(0x|^\s*(/\S+)\s+\(0x")


class BuildError(RuntimeError):
    """buildah is missing or a step failed; the message says which and why."""


def buildah(*args: str, timeout: float = 600) -> str:
    """Run buildah on fedge's own storage (vfs: works without overlay or fuse)."""
    exe = shutil.which("buildah")
    if exe is None:
        raise BuildError("buildah is not installed (deploy/system-deps.sh installs it)")
    cmd = [exe, "--root", str(STORAGE / "storage"), "--runroot", str(STORAGE / "run"),
           "--storage-driver", "vfs", *args]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise BuildError(f"buildah {args[0]} failed: {(done.stderr or done.stdout)[-3000:]}")
    return done.stdout


def _elf_files(tree: Path) -> list[Path]:
    out = []
    for p in tree.rglob("*"):
        if p.is_file() and not p.is_symlink():
            with p.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    out.append(p)
    return out


def system_libraries(tree: Path) -> set[Path]:
    """The host libraries outside ``tree`` that its ELF files load, and the loader. Those
    the bundle also carries are kept: the bootloader loads libz before it knows its
    own directory."""
    needed: set[Path] = set()
    for elf in _elf_files(tree):
        done = subprocess.run(["ldd", str(elf)], capture_output=True, text=True, check=False)
        for line in done.stdout.splitlines():
            m = _LDD_LINE.search(line)
            path = Path(m.group(1) or m.group(2)) if m else None
            if path is None or tree in path.parents:
                continue
            needed.add(path)
    return needed


_ETC = {
    "passwd": f"root:x:0:0:root:/root:/sbin/nologin\nfedge:x:{UID}:{UID}:fedge:/var/lib/fedge:/sbin/nologin\n",
    "group": f"root:x:0:\nfedge:x:{UID}:\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
    "hosts": "127.0.0.1 localhost\n::1 localhost\n",
}


def stage_agent(bundle: Path, context: Path) -> None:
    """The build context: ``fedge/`` (the bundle) and ``system/`` (libraries and /etc)."""
    shutil.rmtree(context, ignore_errors=True)
    system = context / "system"
    shutil.copytree(bundle, context / "fedge", symlinks=True)
    for lib in sorted(system_libraries(bundle)):
        real = lib.resolve()
        for dest in {lib, Path("/lib/x86_64-linux-gnu") / lib.name}:
            target = system / dest.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(real, target)
    (system / "etc" / "fedge").mkdir(parents=True)
    for name, text in _ETC.items():
        (system / "etc" / name).write_text(text)
    certs = Path("/etc/ssl/certs/ca-certificates.crt")
    if certs.exists():  # the system trust store, for a coordinator with a public certificate
        (system / "etc/ssl/certs").mkdir(parents=True)
        shutil.copy2(certs, system / "etc/ssl/certs" / certs.name)
    for d in ("tmp", "var/lib/fedge"):
        (system / d).mkdir(parents=True, exist_ok=True)
        (system / d / ".keep").write_text("")  # COPY keeps directories that hold a file
    (system / "tmp").chmod(0o1777)


def build_agent_image(tag: str = AGENT_IMAGE) -> str:
    """Build the agent bundle (cached), stage the context, ``buildah build`` the image."""
    bundle_build = runpy.run_path(str(ROOT / "deploy" / "bundle" / "build.py"))
    try:
        bundle = bundle_build["build"]("pyinstaller")
    except RuntimeError as exc:
        raise BuildError(str(exc)) from exc
    context = STORAGE / "context-agent"
    stage_agent(Path(bundle), context)
    buildah("build", "--isolation", "chroot", "--layers", "--quiet",
            "-f", str(HERE / "agent.Containerfile"), "-t", tag, str(context))  # fmt: skip
    buildah("rmi", "--prune")  # the images this tag replaced
    return tag


def image_size(tag: str) -> int:
    """The image's size in bytes: the sum of its layers (uncompressed tar) per its manifest."""
    manifest = json.loads(json.loads(buildah("inspect", "--type", "image", tag))["Manifest"])
    return sum(int(layer["size"]) for layer in manifest["layers"])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tag", default=AGENT_IMAGE)
    args = parser.parse_args()
    try:
        tag = build_agent_image(args.tag)
        size = image_size(tag)
    except BuildError as exc:
        sys.exit(f"error: {exc}")
    print(f"{tag} {size / 1e6:.1f} MB", file=sys.stderr)
    print(tag)


if __name__ == "__main__":
    main()
