"""``python -m finalcopy`` in a subprocess: the one ``run_cli`` of the test suite.

The child gets the test's environment without the pipeline's variables (the
ones :data:`finalcopy.finalize.settings.ENV` reads), so a developer's
``OUTPUT_DIR`` or ``DEBUG`` never leaks into a test, and a wide, colourless
terminal, so rich never wraps or styles what the tests grep.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from finalcopy.finalize.settings import ENV
from tests.support.users import LocalUser

__all__ = ["REPO", "cli_env", "finalcopy_cmd", "run_cli"]

REPO = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict[str, str]:
    """The test's environment without the pipeline's variables, plus ``extra``."""
    dropped = {*ENV.values(), "FORCE_COLOR"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def finalcopy_cmd(*args: str | os.PathLike[str]) -> list[str]:
    """The argv of ``python -m finalcopy ARGS`` with this interpreter."""
    return [sys.executable, "-m", "finalcopy", *(os.fspath(a) for a in args)]


def run_cli(
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    user: LocalUser | None = None,
    timeout: float = 300,
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m finalcopy ARGS`` (as ``user`` if given) and capture its output.

    ``env`` and the keyword arguments ``extra`` (``OUTPUT_DIR=...``) are added
    to :func:`cli_env`.
    """
    command = finalcopy_cmd(*args)
    if user is not None:
        setpriv = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups"]
        command = [*setpriv, *command]
    return subprocess.run(
        command,
        cwd=cwd,
        env=cli_env(**(env or {}), **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
