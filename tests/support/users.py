"""An unprivileged account for permission tests, and a way to act as it.

Root bypasses the owner checks behind EPERM from chmod/utime and EACCES on
foreign folders, so those failures can only be reproduced as another user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LocalUser", "acting_as", "ensure_unprivileged_user", "lookup_user"]

DEFAULT_NAME = "fcnobody"


@dataclass(frozen=True)
class LocalUser:
    """An account on this machine."""

    name: str
    uid: int
    gid: int
    home: Path


def lookup_user(name: str) -> LocalUser | None:
    """The account called ``name``, or None."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return LocalUser(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


def ensure_unprivileged_user(name: str = DEFAULT_NAME) -> LocalUser:
    """Create (once) a login-capable account without privileges.

    Idempotent and safe against a concurrent creator. The password field is
    set to ``*`` because sshd without PAM refuses accounts locked with ``!``.
    """
    if os.geteuid() != 0:
        raise PermissionError("creating a test user needs root")
    if lookup_user(name) is None:
        proc = _run_retrying(
            ["useradd", "--create-home", "--user-group", "--shell", "/bin/sh", name],
            ok_codes=(0, 9),  # 9: the name exists (another process was faster)
        )
        if lookup_user(name) is None:
            raise RuntimeError(f"useradd {name} failed: {proc.stderr.strip()}")
    if _shadow_password(name).startswith("!"):
        _run_retrying(["usermod", "--password", "*", name], ok_codes=(0,))
    user = lookup_user(name)
    assert user is not None
    if not user.home.is_dir():
        user.home.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chown(user.home, user.uid, user.gid)
    return user


@contextlib.contextmanager
def acting_as(user: LocalUser) -> Iterator[None]:
    """Switch this whole process's effective uid/gid to ``user`` for the body.

    Every thread is switched (glibc broadcasts set*id), and the saved uid stays
    root, so the switch back works. Paths the body touches must be reachable
    by ``user``: pytest's ``tmp_path`` lives under a 0700 folder and is not.
    Do not run other tests concurrently in the same process.
    """
    if os.geteuid() != 0:
        raise PermissionError("acting as another user needs root")
    groups = os.getgroups()
    os.setgroups([user.gid])
    os.setegid(user.gid)
    os.seteuid(user.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)


def _shadow_password(name: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/shadow").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name and len(fields) > 1:
                return fields[1]
    return ""


def _run_retrying(cmd: list[str], ok_codes: tuple[int, ...]) -> subprocess.CompletedProcess[str]:
    """Run an account tool, retrying while another one holds /etc/passwd's lock."""
    for _attempt in range(20):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode in ok_codes:
            return proc
        if "lock" not in proc.stderr:
            break
        time.sleep(0.1)
    raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
