"""The README's Python API examples run as written (paths moved into a temporary folder)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support.cli import REPO, cli_env


def _examples() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API") : text.index("## Benchmarks")]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_copy_tree_and_open_backend_example(tmp_path: Path) -> None:
    copy_example = _examples()[0]
    (tmp_path / "data" / "shoot-42").mkdir(parents=True)
    (tmp_path / "data" / "shoot-42" / "a.txt").write_text("a")
    code = copy_example.replace("/srv/archive", str(tmp_path / "archive")).replace(
        "/data", str(tmp_path / "data")
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("True 1 0 {} ")
    assert (tmp_path / "archive" / "shoot-42" / "a.txt").read_text() == "a"


def test_finalize_sync_example(tmp_path: Path) -> None:
    finalize_example = _examples()[1]
    (tmp_path / "data" / "projets_extraits").mkdir(parents=True)
    (tmp_path / "cache").mkdir()
    code = finalize_example.replace("/data", str(tmp_path / "data")).replace(
        "/mnt/cache", str(tmp_path / "cache")
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("0 {'projects': 0")
