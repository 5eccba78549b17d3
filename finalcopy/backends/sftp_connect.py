"""The connection to an SSH server for :mod:`finalcopy.backends.sftp`: sessions and retries.

A :class:`Link` owns the connection. It connects with the settings of
:mod:`finalcopy.backends.sftp_settings` (so a refused host key is named by
its fingerprint), opens SFTP channels and a shell for hash commands, and
learns once which hash commands the server runs. That probe goes through the
user's login shell, whose rc files may be slow or stuck, so it runs beside the
transfer: a session is usable as soon as SFTP is up, and whoever needs the
answer waits at most :data:`PROBE_TIMEOUT` after the probe started, then
reads back over SFTP instead (see :meth:`Link.hash_tools`).
:meth:`Link.call` runs one operation with a timeout and, when the connection
drops, reconnects with backoff and tries again; every asyncssh error leaves
here as a :mod:`finalcopy.errors` exception.

asyncssh runs on asyncio only, so this module (and the SFTP backend) uses
asyncio tasks and timers directly where anyio has no equivalent.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import asyncssh

from finalcopy.backends.sftp_settings import (
    MAX_CHANNELS,
    ClientSettings,
    HostKeyPolicy,
    Target,
    client_settings,
)
from finalcopy.backends.sftp_shell import ShellPool, detect_command, detected_tools
from finalcopy.errors import (
    ConnectionLostError,
    DestinationError,
    DestinationUnusable,
    NoSpaceError,
    PermissionDeniedError,
)

logger = logging.getLogger("finalcopy.sftp")

_T = TypeVar("_T")

#: Shells for hashing commands; the server hashes at several GB/s, so two suffice.
SHELLS = 2
#: Seconds the hash-tool probe may take before files are verified by reading back.
PROBE_TIMEOUT = 5.0
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 8.0

RetryListener = Callable[[str, int, str], None]
"""Called as ``(path, attempt, error)`` before an operation is tried again."""


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1``."""
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (attempt - 1)))


# -- error mapping ------------------------------------------------------------------


def is_connection_error(exc: BaseException) -> bool:
    """True for failures of the link itself (worth a reconnect), not refusals by the server."""
    if isinstance(exc, ConnectionLostError):
        return True
    if isinstance(exc, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection):
        return True
    if isinstance(exc, asyncssh.SFTPError):
        return False
    return isinstance(
        exc,
        asyncssh.ConnectionLost | asyncssh.ChannelOpenError | BrokenPipeError | TimeoutError,
    ) or (isinstance(exc, OSError) and not isinstance(exc, asyncssh.Error))


def describe_ssh_error(exc: BaseException) -> str:
    """asyncssh's reason without the class name noise."""
    if isinstance(exc, asyncssh.Error) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, TimeoutError):
        return "no answer within the timeout"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def map_sftp_error(exc: asyncssh.SFTPError, action: str, where: str) -> DestinationError:
    """Translate the server's refusal of one SFTP request."""
    message = f"cannot {action} '{where}': {describe_ssh_error(exc)}"
    if isinstance(exc, asyncssh.SFTPPermissionDenied | asyncssh.SFTPWriteProtect):
        return PermissionDeniedError(message)
    if isinstance(exc, asyncssh.SFTPNoSpaceOnFilesystem | asyncssh.SFTPQuotaExceeded):
        return NoSpaceError(message)
    return DestinationError(message)


class _Client(asyncssh.SSHClient):
    """Routes host key decisions to the policy and notices a dropped connection."""

    def __init__(self, policy: HostKeyPolicy) -> None:
        self.policy = policy
        self.lost = False

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        return self.policy.validate(host, addr, port, key)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


# -- one connection -----------------------------------------------------------------


@dataclass(eq=False)
class Session:
    """One SSH connection with its SFTP channels and its shells for commands."""

    conn: asyncssh.SSHClientConnection
    client: _Client
    channels: list[asyncssh.SFTPClient]
    shells: ShellPool
    timeout: float = 300.0
    streams: dict[object, float] = field(default_factory=dict)
    """Transfers with requests in flight → when one last completed (see :meth:`watch`)."""
    background: asyncio.Future[None] | None = None
    _next: int = 0
    _timer: asyncio.TimerHandle | None = None

    @property
    def alive(self) -> bool:
        return not self.client.lost

    def channel(self) -> asyncssh.SFTPClient:
        """The next SFTP channel, round robin: files spread over the server processes."""
        self._next = (self._next + 1) % len(self.channels)
        return self.channels[self._next]

    @property
    def control(self) -> asyncssh.SFTPClient:
        """The channel for metadata requests."""
        return self.channels[0]

    async def run(self, command: str, parse: Callable[[list[str]], _T | None]) -> _T | None:
        """``parse`` of the output of a shell command run on the server (``None``: malformed)."""
        return await self.shells.run(command, parse)

    async def add_channels(self, count: int) -> None:
        """Open ``count`` more SFTP channels; without them the first one serves alone."""
        for _ in range(count):
            try:
                channel = await self.conn.start_sftp_client(path_errors="surrogateescape")
            except (asyncssh.Error, OSError) as exc:
                logger.info("no further SFTP channel (%s)", describe_ssh_error(exc))
                return
            self.channels.append(channel)

    def watch(self) -> None:
        """Drop the connection once a transfer waits ``timeout`` seconds without progress.

        The pending requests then fail and the transfers reconnect and resume.
        A timer rather than a timeout around each request: thousands of writes
        complete per second, and a silent connection is all there is to catch.
        """
        loop = asyncio.get_running_loop()
        interval = min(1.0, self.timeout / 4)

        def check() -> None:
            now = loop.time()
            if any(now - last > self.timeout for last in self.streams.values()):
                logger.warning("no reply for %.0f s: dropping the connection", self.timeout)
                self.abort()
            elif self.alive:
                self._timer = loop.call_later(interval, check)

        self._timer = loop.call_later(interval, check)

    def stop(self) -> None:
        """Cancel the timer and the background work (before closing)."""
        if self._timer is not None:
            self._timer.cancel()
        if self.background is not None:
            self.background.cancel()
        self.shells.close()

    def abort(self) -> None:
        self.stop()
        self.client.lost = True
        self.conn.abort()


class Link:
    """The connection to one server, re-opened when it drops.

    Operations go through :meth:`call`, which applies the timeout, maps
    errors and retries after reconnecting; a file transfer passes an operation
    that starts by finding how much of its partial file it can keep.
    """

    def __init__(self, target: Target, on_retry: RetryListener | None = None) -> None:
        self.target = target
        self.on_retry = on_retry
        self.label = target.host
        self._session: Session | None = None
        self._connected = False
        self._lock = anyio.Lock()
        self._broken: DestinationError | None = None
        self._settings: ClientSettings | None = None
        # What the hash-tool probe found: None until it answers; see hash_tools().
        self._tools: dict[str, str] | None = None
        self._runs_commands = False
        self._probe: asyncio.Task[None] | None = None
        self._probe_answered = asyncio.Event()
        self._probe_deadline = 0.0
        self._gave_up = False

    @property
    def attempts(self) -> int:
        return max(1, self.target.attempts)

    @property
    def timeout(self) -> float:
        return self.target.timeout

    @property
    def channels(self) -> int:
        """SFTP channels per connection."""
        return max(1, min(self.target.channels, MAX_CHANNELS))

    async def session(self) -> Session:
        """The live session, connecting first if needed."""
        session = self._session
        if session is not None and session.alive:
            return session
        async with self._lock:
            if self._session is None or not self._session.alive:
                self._session = await self._connect()
            return self._session

    async def recover(self, failed: Session, attempt: int, where: str, exc: BaseException) -> None:
        """After ``failed`` dropped: wait, reconnect once for everyone, tell the listener."""
        reason = describe_ssh_error(exc)
        logger.warning(
            "connection to %s lost (%s) during '%s'; reconnecting (attempt %d of %d)",
            self.label,
            reason,
            where,
            attempt + 1,
            self.attempts,
        )
        if self.on_retry is not None:
            self.on_retry(where, attempt + 1, reason)
        async with self._lock:
            if self._session is failed:
                self._session = None
                failed.abort()
                await anyio.sleep(backoff(attempt))
                self._session = await self._connect()

    async def call(
        self,
        action: str,
        where: str,
        operation: Callable[[Session], Awaitable[_T]],
        *,
        time_limit: float | None = None,
    ) -> _T:
        """Run ``operation`` on the live session; reconnect and retry when the link drops."""
        attempt = 1
        while True:
            session = await self.session()
            try:
                with anyio.fail_after(time_limit or self.timeout):
                    return await operation(session)
            except Exception as exc:
                if not (is_connection_error(exc) or not session.alive):
                    if isinstance(exc, asyncssh.SFTPError):
                        raise map_sftp_error(exc, action, where) from None
                    if isinstance(exc, asyncssh.Error):
                        raise DestinationError(
                            f"cannot {action} '{where}': {describe_ssh_error(exc)}"
                        ) from None
                    raise
                if attempt >= self.attempts:
                    raise ConnectionLostError(
                        f"cannot {action} '{where}': the connection to {self.label} dropped "
                        f"{attempt} time(s); last: {describe_ssh_error(exc)}"
                    ) from None
                await self.recover(session, attempt, where, exc)
                attempt += 1

    async def _connect(self) -> Session:
        if self._broken is not None:
            raise self._broken
        try:
            session = await self._connect_with_retries()
        except DestinationUnusable as exc:
            if self._connected:
                # Tasks still waiting for a reconnect fail at once instead of retrying in turn.
                self._broken = exc
            raise
        self._connected = True
        return session

    async def _connect_with_retries(self) -> Session:
        if self._settings is None:
            self._settings = await client_settings(self.target)
            self.label = self._settings.label
        settings = self._settings
        policy = settings.policy
        for attempt in range(1, self.attempts + 1):
            client = _Client(policy)
            conn: asyncssh.SSHClientConnection | None = None
            try:
                with anyio.fail_after(self.timeout):
                    conn = await asyncssh.connect(
                        self.target.host,
                        **settings.kwargs,
                        known_hosts=policy.match,
                        client_factory=lambda c=client: c,
                    )
                    return await self._open_session(conn, client)
            except asyncssh.HostKeyNotVerifiable as exc:
                raise policy.refusal(describe_ssh_error(exc)) from None
            except asyncssh.PermissionDenied as exc:
                raise DestinationUnusable(
                    f"SSH server {self.label} refused the login ({describe_ssh_error(exc)}); "
                    "check the key (--identity), the agent or the SSH configuration"
                ) from None
            except BaseException as exc:
                if conn is not None:
                    conn.abort()
                if not isinstance(exc, Exception):
                    raise
                if not is_connection_error(exc) or attempt >= self.attempts:
                    hint = (
                        "; if the server's host key type changed, check known_hosts"
                        if isinstance(exc, asyncssh.KeyExchangeFailed)
                        else f" ({attempt} attempts)"
                        if attempt > 1
                        else ""
                    )
                    raise DestinationUnusable(
                        f"cannot connect to {self.label}: {describe_ssh_error(exc)}{hint}"
                    ) from None
                logger.warning(
                    "cannot connect to %s (%s); retrying", self.label, describe_ssh_error(exc)
                )
            await anyio.sleep(backoff(attempt))
        raise AssertionError("unreachable")

    async def _open_session(self, conn: asyncssh.SSHClientConnection, client: _Client) -> Session:
        # Every session channel costs the server a login-shell start (0.3 s with a
        # heavy ~/.bashrc): the probe's shell starts beside the first channel, and
        # further channels join in the background.
        shells = ShellPool(conn, SHELLS)
        if self._tools is None and not self._gave_up:
            self._start_probe(shells, client)
        channel = await conn.start_sftp_client(path_errors="surrogateescape")
        session = Session(conn, client, [channel], shells, timeout=self.timeout)
        session.watch()
        extra = self.channels - 1
        if extra:
            session.background = asyncio.ensure_future(session.add_channels(extra))
        return session

    # -- which hash commands the server runs ---------------------------------------

    def _start_probe(self, shells: ShellPool, client: _Client) -> None:
        if self._probe is not None:
            self._probe.cancel()  # it ran on a connection that dropped
        self._probe_answered = asyncio.Event()
        self._probe_deadline = asyncio.get_running_loop().time() + PROBE_TIMEOUT
        self._probe = asyncio.ensure_future(self._run_probe(shells, client))

    async def _run_probe(self, shells: ShellPool, client: _Client) -> None:
        try:
            tools = await shells.run(detect_command(), detected_tools)
        except (asyncssh.Error, OSError) as exc:
            if not client.lost:  # else the next connection probes again
                logger.info("the server runs no commands (%s)", describe_ssh_error(exc))
                self._tools = {}
        else:
            if tools is None:
                logger.info("unexpected answer to the hash-tool probe: reading back instead")
            self._tools = tools or {}
            self._runs_commands = tools is not None
        finally:
            self._probe_answered.set()

    async def wait_for_probe(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the hash-tool probe to answer."""
        if self._tools is None and self._probe is not None and not self._gave_up:
            with anyio.move_on_after(seconds):
                await self._probe_answered.wait()

    async def hash_tools(self) -> dict[str, str] | None:
        """Algorithm name → the server's command for it; ``None`` when it runs no commands.

        Waits for the probe until :data:`PROBE_TIMEOUT` after it started, then
        gives up on the server's shell for good, with one warning: files are
        read back over SFTP instead.
        """
        if self._tools is None and self._probe is not None and not self._gave_up:
            await self.wait_for_probe(self._probe_deadline - asyncio.get_running_loop().time())
            # Answered without a result means its connection dropped (the next one probes
            # again); not answered in time means the shell is slow, for good.
            if not self._probe_answered.is_set() and not self._gave_up:
                self._gave_up = True
                self._probe.cancel()
                logger.warning(
                    "the shell of %s did not answer within %.0f s (slow login scripts?): "
                    "verifying by reading files back over SFTP",
                    self.label,
                    PROBE_TIMEOUT,
                )
        return self._tools if self._runs_commands else None

    @property
    def probing(self) -> bool:
        """The probe has not answered yet (nor been given up)."""
        return self._tools is None and not self._gave_up

    @property
    def known_tools(self) -> dict[str, str]:
        """What :meth:`hash_tools` would return now, without waiting (``{}`` if unknown)."""
        return (self._tools or {}) if self._runs_commands else {}

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        session, self._session = self._session, None
        if session is not None:
            session.stop()
            for channel in session.channels:
                channel.exit()
            session.conn.close()
            with anyio.move_on_after(5, shield=True):
                await session.conn.wait_closed()


def remote_join(base: str, path: str) -> str:
    """Absolute server path of ``path`` (relative POSIX) below ``base``."""
    return posixpath.join(base, path) if path else base
