"""Shared test helpers: the anyio backend, the CLI in a subprocess, tree builders."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.users import LocalUser

# --- tests.support fixtures (real sshd, ntfs-3g and exfat-fuse volumes) -----
pytest_plugins = ["tests.support.fixtures", "tests.support.exfat"]
# --- end tests.support fixtures ---------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def run_cli(
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    user: LocalUser | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m finalcopy ARGS`` (as ``user`` if given) and capture its output."""
    command: list[str] = [sys.executable, "-m", "finalcopy", *(os.fspath(a) for a in args)]
    if user is not None:
        command = [
            "setpriv",
            f"--reuid={user.uid}",
            f"--regid={user.gid}",
            "--clear-groups",
            *command,
        ]
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    full_env.pop("FORCE_COLOR", None)
    return subprocess.run(
        command,
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Create ``files`` (relative path → content) under ``root``."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def tree_content(root: Path, skip: Sequence[str] = (".finalcopy",)) -> dict[str, bytes]:
    """Relative path → bytes of every regular file below ``root``."""
    out: dict[str, bytes] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if rel.split("/")[0] in skip or path.is_symlink() or not path.is_file():
            continue
        out[rel] = path.read_bytes()
    return out


def require_tool(name: str) -> str:
    """Path of a command-line tool; skip (fail under CI) when it is missing."""
    import shutil

    from tests.support.fixtures import require_part

    found = shutil.which(name)
    require_part(None if found else f"{name} is not installed")
    assert found is not None
    return found
