"""The connection to an SSH server: sessions, timeouts and retries.

A :class:`Link` owns the connection. It connects with the settings of
:mod:`.settings` (so a refused host key is named by its fingerprint), opens
SFTP channels and shells for hash commands, and starts the probe that
learns which hash commands the server runs (:class:`.shell.HashTools`),
beside the transfer: a session is usable as soon as SFTP is up.
:meth:`Link.call` runs one operation with a timeout and, when the connection
drops, reconnects with backoff and tries again (telling the caller's
``on_retry`` first); every asyncssh error leaves here as a
:mod:`finalcopy.errors` exception (see :mod:`.errors`).

asyncssh runs on asyncio only, so this module (and the SFTP backend) uses
asyncio tasks and timers directly where anyio has no equivalent.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import asyncssh

from finalcopy.backends.base import RetryListener
from finalcopy.backends.options import DestinationOptions, SshLocation
from finalcopy.backends.sftp.errors import describe_ssh_error, is_connection_error, map_ssh_error
from finalcopy.backends.sftp.settings import (
    MAX_CHANNELS,
    ClientSettings,
    HostKeyPolicy,
    client_settings,
)
from finalcopy.backends.sftp.shell import HashTools, ShellPool
from finalcopy.backends.sftp.transport import skip_ignore_packets
from finalcopy.errors import ConnectionLostError, DestinationError, DestinationUnusable

logger = logging.getLogger("finalcopy.sftp")
#: getaddrinfo's "no such host": permanent, never retried.
_NO_SUCH_HOST = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}

_T = TypeVar("_T")

#: Shells for hashing commands; the server hashes at several GB/s, so two suffice.
SHELLS = 2
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 8.0
#: Seconds a large file waits for a channel of its own while more are being opened.
CHANNEL_WAIT = 5.0


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1``."""
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (attempt - 1)))


async def limited(seconds: float, awaitable: Awaitable[_T]) -> _T:
    """``await awaitable`` within ``seconds`` (``TimeoutError`` otherwise)."""
    with anyio.fail_after(seconds):
        return await awaitable


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
    _stream_leases: Counter[asyncssh.SFTPClient] = field(default_factory=Counter)
    """Channel → its large files being written (:meth:`channel`)."""
    _file_leases: Counter[asyncssh.SFTPClient] = field(default_factory=Counter)
    """Channel → its small files being written (:meth:`channel`)."""
    _timer: asyncio.TimerHandle | None = None

    @property
    def alive(self) -> bool:
        return not self.client.lost

    def channel(self, *, stream: bool = False) -> asyncssh.SFTPClient:
        """An SFTP channel for a file to write, leased until :meth:`release`.

        The one with the fewest large files (``stream``), then the fewest
        files, writing through it; round robin among equals. Two large files
        on one channel would share its window (OpenSSH: 2 MiB) and its
        sftp-server process while another channel idles, and a small file
        behind a large one waits for that window.
        """
        count = len(self.channels)
        self._next = (self._next + 1) % count
        order = [self.channels[(self._next + i) % count] for i in range(count)]
        channel = min(order, key=lambda c: (self._stream_leases[c], self._file_leases[c]))
        self._leases(stream)[channel] += 1
        return channel

    async def stream_channel(self) -> asyncssh.SFTPClient:
        """:meth:`channel` for a large file: one of its own if another is still being opened.

        The channels beyond the first open in the background; a large file
        that would share a channel with another waits for them (a moment, at
        the start of a copy) rather than halve both windows for its whole length.
        """
        pending = self.background
        shared = all(self._stream_leases[c] for c in self.channels)
        if shared and pending is not None and not pending.done():
            await asyncio.wait([pending], timeout=min(self.timeout, CHANNEL_WAIT))
        return self.channel(stream=True)

    def release(self, channel: asyncssh.SFTPClient, *, stream: bool = False) -> None:
        """A file leased from :meth:`channel` is done writing through ``channel``."""
        leases = self._leases(stream)
        leases[channel] -= 1
        if leases[channel] <= 0:  # a stray release must not make the channel look preferable
            del leases[channel]

    def _leases(self, stream: bool) -> Counter[asyncssh.SFTPClient]:
        return self._stream_leases if stream else self._file_leases

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

    def __init__(self, location: SshLocation, options: DestinationOptions) -> None:
        self.location = location
        self.options = options
        self.label = location.host
        self._session: Session | None = None
        self._connected = False
        self._lock = anyio.Lock()
        self._broken: DestinationError | None = None
        self._settings: ClientSettings | None = None
        self.tools = HashTools()
        """Which hash commands the server runs, as far as its probe has told."""

    @property
    def attempts(self) -> int:
        """Attempts per operation (the first one included)."""
        return max(1, self.options.retry_attempts)

    @property
    def timeout(self) -> float:
        """Seconds an operation may go without progress."""
        return self.options.timeout

    @property
    def channels(self) -> int:
        """SFTP channels per connection: one per file in flight, up to :data:`MAX_CHANNELS`."""
        return max(1, min(self.options.jobs, MAX_CHANNELS))

    async def session(self) -> Session:
        """The live session, connecting first if needed."""
        session = self._session
        if session is not None and session.alive:
            return session
        async with self._lock:
            if self._session is None or not self._session.alive:
                self._session = await self._connect()
            return self._session

    async def recover(
        self,
        failed: Session,
        attempt: int,
        where: str,
        exc: BaseException,
        on_retry: RetryListener | None = None,
    ) -> None:
        """After ``failed`` dropped: tell ``on_retry``, wait, reconnect once for everyone."""
        reason = describe_ssh_error(exc)
        logger.warning(
            "connection to %s lost (%s) during '%s'; reconnecting (attempt %d of %d)",
            self.label,
            reason,
            where,
            attempt + 1,
            self.attempts,
        )
        if on_retry is not None:
            on_retry(where, attempt + 1, reason)
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
        on_retry: RetryListener | None = None,
    ) -> _T:
        """Run ``operation`` on the live session; reconnect and retry when the link drops.

        ``on_retry`` is told ``(where, attempt, reason)`` before each retry.
        """
        attempt = 1
        while True:
            session = await self.session()
            try:
                # A transfer passes math.inf (never fires): the session's stall watch guards it.
                with anyio.fail_after(time_limit or self.timeout):
                    return await operation(session)
            except Exception as exc:
                if not is_connection_error(exc) and session.alive:
                    mapped = map_ssh_error(exc, action, where)
                    if mapped is exc:
                        raise
                    raise mapped from None
                if attempt >= self.attempts:
                    raise ConnectionLostError(
                        f"cannot {action} '{where}': the connection to {self.label} dropped "
                        f"{attempt} time(s); last: {describe_ssh_error(exc)}"
                    ) from None
                await self.recover(session, attempt, where, exc, on_retry)
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
            self._settings = await client_settings(self.location, self.options)
            self.label = self._settings.label
        settings = self._settings
        policy = settings.policy
        for attempt in range(1, self.attempts + 1):
            client = _Client(policy)
            conn: asyncssh.SSHClientConnection | None = None
            try:
                with anyio.fail_after(self.timeout):
                    conn = await asyncssh.connect(
                        self.location.host,
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
                # A name that does not resolve will not resolve on retry either.
                no_such_host = isinstance(exc, socket.gaierror) and exc.errno in _NO_SUCH_HOST
                if not is_connection_error(exc) or attempt >= self.attempts or no_such_host:
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
        skip_ignore_packets(conn)
        shells = ShellPool(conn, SHELLS)
        if self.tools.pending:
            self.tools.start(shells, lambda: client.lost)
        channel = await conn.start_sftp_client(path_errors="surrogateescape")
        session = Session(conn, client, [channel], shells, timeout=self.timeout)
        session.watch()
        extra = self.channels - 1
        if extra:
            session.background = asyncio.ensure_future(session.add_channels(extra))
        return session

    async def hash_tools(self) -> dict[str, str] | None:
        """Algorithm name → server command; ``None`` when it runs none (see HashTools.get)."""
        return await self.tools.get(self.label)

    async def aclose(self) -> None:
        """Close the connection (and stop the probe)."""
        self.tools.cancel()
        session, self._session = self._session, None
        if session is not None:
            session.stop()
            for channel in session.channels:
                channel.exit()
            session.conn.close()
            with anyio.move_on_after(5, shield=True):
                await session.conn.wait_closed()
