"""One holder per destination folder: a lock that lives at the destination itself.

Two runs from different work directories, two hosts sharing one NAS, or a
``finalcopy copy`` beside a ``finalcopy run`` must never interleave on one
folder: one would roll back or delete what the other just proved. A lock in
the work directory cannot see the others, so the lock is a folder made at the
destination, ``<folder>/.finalcopy/lock/``: a folder filled under a name of
its own, then renamed to ``lock`` — a folder cannot be renamed onto a
non-empty one, locally or over SFTP, so exactly one creator wins, and no
crash leaves a lock without its owner. Its ``owner.json`` says who holds it::

    {"token": "...", "host": "...", "boot_id": "...", "pid": 1234,
     "pid_start": 5678, "started": "2026-11-30T22:00:00+00:00", "purpose": "run"}

**A crashed holder** is recognised two ways, and only then is its lock broken:

* same host (name and boot id equal ours): the holder is gone when its pid no
  longer exists or belongs to a later process (start time differs), or the
  machine rebooted since (boot id differs);
* another host: the holder rewrites ``owner.json`` every
  :data:`HEARTBEAT_SECONDS`; a lock whose owner file (or, if there is none,
  whose folder) has not changed for :data:`STALE_SECONDS` by our clock is
  abandoned. Clocks skewed by more than that are not supported.

**Breaking** renames the stale lock folder to a name of our own (a rename has
one winner), checks that what moved is the owner judged stale (else puts it
back), removes it, and competes for the ``mkdir`` again. Should two breakers
still race, a holder whose lock was taken notices it at its next
:meth:`DestinationLock.check`, which the pipeline calls before every
destructive step (swap, source deletion, rollback), and stops there: the lock
fences destruction, not copying, which is always safe to repeat.

``owner.json`` is untrusted input: malformed content means "unknown owner",
judged by age alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from finalcopy.backends.base import Backend, join
from finalcopy.backends.removal import remove_tree
from finalcopy.engine.plan import META_DIR
from finalcopy.errors import DestinationLocked, FinalcopyError, LockLost

LOCK_NAME = "lock"
OWNER_NAME = "owner.json"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 15 * 60.0
OWNER_MAX_BYTES = 4096


@dataclass(frozen=True)
class Owner:
    """Who holds a lock, as its ``owner.json`` says (validated)."""

    token: str
    host: str
    boot_id: str
    pid: int
    pid_start: int
    started: str
    purpose: str

    @classmethod
    def me(cls, purpose: str) -> Owner:
        pid = os.getpid()
        return cls(
            token=secrets.token_hex(16),
            host=socket.gethostname(),
            boot_id=_boot_id(),
            pid=pid,
            pid_start=_process_start(pid) or 0,
            started=datetime.now().astimezone().isoformat(timespec="seconds"),
            purpose=purpose,
        )

    @classmethod
    def parse(cls, data: bytes | None) -> Owner | None:
        """The owner in ``data``, or None if it is missing or malformed."""
        if not data or len(data) > OWNER_MAX_BYTES:
            return None
        try:
            raw: Any = json.loads(data)
            fields = {
                "token": str,
                "host": str,
                "boot_id": str,
                "pid": int,
                "pid_start": int,
                "started": str,
                "purpose": str,
            }
            if not isinstance(raw, dict) or not all(
                isinstance(raw.get(k), t) and not isinstance(raw.get(k), bool)
                for k, t in fields.items()
            ):
                return None
            return cls(**{k: raw[k] for k in fields})
        except ValueError:
            return None

    def encode(self) -> bytes:
        return (json.dumps(self.__dict__, ensure_ascii=False) + "\n").encode("utf-8")

    def describe(self) -> str:
        return f"{self.purpose} on {self.host} (pid {self.pid}) since {self.started}"

    def is_gone(self) -> bool | None:
        """True/False when this host can tell whether the holder still runs, else None."""
        if self.host != socket.gethostname() or not self.boot_id:
            return None
        if self.boot_id != _boot_id():
            return True  # the machine restarted since: no process of then survives
        start = _process_start(self.pid)
        return start is None or (self.pid_start != 0 and start != self.pid_start)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> int | None:
    """The start time (clock ticks since boot) of process ``pid``, None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:
            pass
        return 0
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[19])


class DestinationLock:
    """The lock of one destination folder (``""``: the backend's root).

    ``async with lock:`` holds it for the block (:meth:`acquire`, then
    :meth:`release` even when the block is cancelled).
    """

    def __init__(self, backend: Backend, folder: str, purpose: str) -> None:
        self.backend = backend
        self.folder = folder
        self.path = join(folder, META_DIR, LOCK_NAME)
        self.owner_path = join(self.path, OWNER_NAME)
        self.me = Owner.me(purpose)
        self.held = False
        self.lost = False

    def describe(self) -> str:
        return self.backend.describe(self.path)

    def moved(self, folder: str, new_folder: str) -> None:
        """The locked folder was renamed (by its holder): follow it."""
        if self.folder == folder:
            self.folder = new_folder
            self.path = join(new_folder, META_DIR, LOCK_NAME)
            self.owner_path = join(self.path, OWNER_NAME)

    async def acquire(self) -> None:
        """Take the lock, breaking a crashed holder's; :class:`DestinationLocked` if held."""
        # Born complete: the folder is filled under a name of our own, then renamed to
        # "lock" (a folder cannot be renamed onto a non-empty one: one winner), so no
        # crash ever leaves a lock without its owner.
        fresh = join(self.folder, META_DIR, f"lock.new-{self.me.token[:12]}")
        await self.backend.write_bytes(join(fresh, OWNER_NAME), self.me.encode())
        try:
            for _ in range(3):
                try:
                    await self.backend.rename(fresh, self.path)
                except FinalcopyError:
                    pass
                else:
                    self.held = True
                    return
                owner = Owner.parse(await self._read_owner())
                if not await self._abandoned(owner):
                    who = owner.describe() if owner else "an unknown run"
                    raise DestinationLocked(
                        f"'{self.backend.describe(self.folder)}' is being written by {who} "
                        f"(lock '{self.describe()}'); try again when it has finished"
                    )
                await self._take_away(owner.token if owner else None, "stale")
            raise DestinationLocked(f"could not take the lock '{self.describe()}' (contended)")
        finally:
            if not self.held:
                with contextlib.suppress(FinalcopyError):
                    await remove_tree(self.backend, fresh)

    async def __aenter__(self) -> DestinationLock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):
            await self.release()

    async def _read_owner(self) -> bytes | None:
        """``owner.json`` of the lock; None if missing or unreadable."""
        with contextlib.suppress(FinalcopyError):
            return await self.backend.read_bytes(self.owner_path)
        return None

    async def _abandoned(self, owner: Owner | None) -> bool:
        if owner is not None:
            gone = owner.is_gone()
            if gone is not None:
                return gone
        owner_st, dir_st = await self.backend.stat([self.owner_path, self.path])
        latest = owner_st or dir_st
        if latest is None:
            return True  # released meanwhile
        return time.time() - latest.mtime_ns / 1e9 > STALE_SECONDS

    async def _take_away(self, token: str | None, why: str) -> None:
        """Remove the lock if it still belongs to ``token``: renamed aside in one step,
        checked, then emptied.

        One rename, so no crash leaves a lock without its owner (which nobody
        could tell from a live holder's until it went stale); checked after the
        rename, so a holder that took the lock since it was judged is given it back.
        """
        aside = join(self.folder, META_DIR, f"lock.{why}-{self.me.token[:12]}")
        try:
            await self.backend.rename(self.path, aside)
        except FinalcopyError:
            return  # someone else broke or released it first
        if not await self._holds_token(aside, token):
            with contextlib.suppress(FinalcopyError):
                await self.backend.rename(aside, self.path)
            return
        await remove_tree(self.backend, aside)

    async def _holds_token(self, lock: str, token: str | None) -> bool:
        """Whether the lock folder ``lock`` is owned by ``token`` (None: by no readable owner).

        An owner that cannot be read proves nothing either way: not a match, so
        a lock a live run took meanwhile is never removed on a read error.
        """
        try:
            data = await self.backend.read_bytes(join(lock, OWNER_NAME))
        except FinalcopyError:
            return False
        owner = Owner.parse(data)
        return (owner.token if owner else None) == token

    async def check(self) -> None:
        """Raise :class:`LockLost` unless this run still holds the lock."""
        if not self.held:
            return
        owner = Owner.parse(await self._read_owner())
        if self.lost or owner is None or owner.token != self.me.token:
            self.lost = True
            raise LockLost(
                f"the lock '{self.describe()}' was taken over by another run; stopping before "
                "any deletion (nothing of this run's copy is removed)"
            )

    async def refresh(self) -> None:
        """Tell other hosts this holder is alive (rewrite ``owner.json``); raises if lost."""
        await self.check()
        await self.backend.write_bytes(self.owner_path, self.me.encode())

    async def keep_alive(self) -> None:
        """:meth:`refresh` every :data:`HEARTBEAT_SECONDS` until cancelled."""
        while True:
            await anyio.sleep(HEARTBEAT_SECONDS)
            try:
                await self.refresh()
            except FinalcopyError:
                return  # check() reports a lost lock before the next destructive step

    async def release(self) -> None:
        """Give the lock up (only ours: a lock taken over stays with its new holder)."""
        if not self.held:
            return
        self.held = False
        owner = Owner.parse(await self._read_owner())
        if owner is not None and owner.token == self.me.token:
            await self._take_away(self.me.token, "released")
            with contextlib.suppress(FinalcopyError):
                await self.backend.remove(join(self.folder, META_DIR))  # only if empty
