"""pytest fixtures that start real parts: OpenSSH sshd, ntfs-3g and ext4 volumes.

Also the rule every such fixture follows (:func:`require_part`, :func:`require_tool`).

Register once, in the top-level ``tests/conftest.py``::

    pytest_plugins = ["tests.support.fixtures"]

Where a part is missing the test is skipped with the reason, except under
``CI=true``, where it fails: CI must really run these tests.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ext4 import EXT4
from tests.support.loopmount import Driver, LoopMount
from tests.support.ntfs import NTFS, NtfsMount
from tests.support.sshd import SshServer, running_sshd, sshd_available
from tests.support.users import LocalUser, ensure_unprivileged_user

__all__ = [
    "FOREIGN_OWNER_OPTIONS",
    "ext4_mount",
    "ntfs_mount",
    "ntfs_mount_foreign_owner",
    "public_tmp_path",
    "require_part",
    "require_tool",
    "sshd_server",
    "sshd_server_fresh",
    "tmpfs",
    "unprivileged_user",
    "volume",
]

#: ntfs-3g options that make every file belong to uid 4242 (nobody real) with
#: mode 0777: another user may create, write and rename, but chmod and utime
#: with explicit times fail with EPERM, as on a disk mounted for someone else.
FOREIGN_OWNER_OPTIONS = "uid=4242,gid=4242"


def require_part(reason: str | None) -> None:
    """Skip (or under CI=true fail) when ``reason`` says a part is missing."""
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required test part missing under CI: {reason}")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """Path of a command-line tool; skip (fail under CI) when it is missing."""
    found = shutil.which(name)
    require_part(None if found else f"{name} is not installed")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def unprivileged_user() -> LocalUser:
    """The ``fcnobody`` account, created on first use (needs root)."""
    require_part(None if os.geteuid() == 0 else "needs root to create a test user")
    return ensure_unprivileged_user()


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """One sshd for the whole session; as root it also lets ``fcnobody`` in.

    ``kill_sessions()`` keeps it usable; a test that kills the listener must
    use :func:`sshd_server_fresh` instead.
    """
    yield from _sshd(tmp_path_factory.mktemp("sshd"))


@pytest.fixture
def sshd_server_fresh(tmp_path: Path) -> Iterator[SshServer]:
    """A private sshd for tests that stop or break the server (about 0.1 s)."""
    yield from _sshd(tmp_path / "sshd")


@functools.cache
def _volume_base(driver: Driver) -> Path:
    base = Path(tempfile.gettempdir())
    driver.prepare_base(base)
    return base


def volume(driver: Driver, options: str = "") -> Iterator[LoopMount]:
    """A fresh volume of ``driver`` for one test; the body of the volume fixtures.

    Volumes go to the system temporary folder, outside pytest's 0700 tree, so
    other users reach them; what crashed earlier runs left there is unmounted
    and detached once per session.
    """
    require_part(driver.unavailable())
    with driver.volume(_volume_base(driver), options) as mount:
        yield mount


@pytest.fixture
def ext4_mount() -> Iterator[Path]:
    """The mount point of a fresh 256 MiB (sparse) ext4 volume, per test."""
    for mount in volume(EXT4):
        yield mount.mountpoint


@pytest.fixture
def ntfs_mount() -> Iterator[NtfsMount]:
    """A fresh 2 GiB (sparse) ntfs-3g volume with default options, per test."""
    yield from volume(NTFS)


@pytest.fixture
def ntfs_mount_foreign_owner() -> Iterator[NtfsMount]:
    """An ntfs-3g volume owned by uid 4242; see :data:`FOREIGN_OWNER_OPTIONS`.

    Act as ``unprivileged_user`` (``tests.support.users.acting_as``) to get
    EPERM from chmod/utime while writes and renames still succeed.
    """
    yield from volume(NTFS, FOREIGN_OWNER_OPTIONS)


@contextlib.contextmanager
def tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``"4m"``) at ``mountpoint`` until the block ends: a small
    destination that runs out of space for real (mounting needs root)."""
    require_part(None if os.geteuid() == 0 else "mounting a tmpfs needs root")
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mountpoint], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", mountpoint], check=False)


@pytest.fixture
def public_tmp_path() -> Iterator[Path]:
    """A 0777 temporary folder other users can reach, unlike ``tmp_path``."""
    path = Path(tempfile.mkdtemp(prefix="finalcopy-test-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _sshd(tmp_dir: Path) -> Iterator[SshServer]:
    require_part(sshd_available())
    extra = [ensure_unprivileged_user().name] if os.geteuid() == 0 else []
    with running_sshd(tmp_dir, extra_users=extra) as server:
        yield server
