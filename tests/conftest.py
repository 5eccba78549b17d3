"""pytest configuration: the anyio backend and the real-part fixtures.

Shared helpers live in ``tests/support/`` (``cli.run_cli``, ``trees``,
``pipeline``, ``sftp``); test modules import from there, never from each
other or from this file.
"""

from __future__ import annotations

import pytest

# --- tests.support fixtures (real sshd, ntfs-3g and exfat-fuse volumes) -----
pytest_plugins = ["tests.support.fixtures", "tests.support.exfat"]
# --- end tests.support fixtures ---------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
