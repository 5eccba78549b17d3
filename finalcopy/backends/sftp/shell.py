"""Short commands on the SSH server (hashing, ``sync``) through long-lived shells.

Opening an exec channel costs a round trip plus a start of the user's login
shell, which reads its rc files: 0.3 s per command on a machine whose
``~/.bashrc`` initialises pyenv. A :class:`RemoteShell` pays that once: it runs
``sh`` on the server and feeds it one command per request on standard input,
each followed by an ``echo`` of a marker that ends the request's output.
Commands get ``/dev/null`` as input (so they never eat the next request) and
as error output (so stderr never fills the channel window); a failed command
is recognised by its missing or malformed output and diagnosed over SFTP.

The output is untrusted: file names are chosen by whoever can write into the
destination. So every marker is random (a name cannot end a reply early),
names a hash tool would print escaped or across lines never go into a listing
(see :func:`listable`), and every reply is parsed strictly by the caller: a
reply of the wrong shape discards the shell it came from, so nothing left
unread in it can be taken for the answer to a later command.

Which hash commands the server runs is asked once per server
(:class:`HashTools`), through the user's login shell, whose rc files may be
slow or stuck: so the probe runs beside the transfer, and whoever needs the
answer waits at most :data:`PROBE_TIMEOUT` after it started, then reads
files back over SFTP instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import shlex
from collections.abc import Callable, Sequence
from typing import TypeVar

import anyio
import asyncssh

from finalcopy.backends.sftp.errors import describe_ssh_error
from finalcopy.hashing import ALGORITHMS, Algorithm

logger = logging.getLogger("finalcopy.sftp")

_T = TypeVar("_T")

#: Longest command line sent at once (a batch of hashed paths).
COMMAND_MAX = 32 * 1024
#: Seconds the hash-tool probe may take before files are verified by reading back.
PROBE_TIMEOUT = 5.0
#: What hash tools print as the name of standard input (``xxh128sum`` says ``stdin``).
STDIN_NAMES = ("-", "stdin")

_HEX = re.compile(r"[0-9a-f]+")


def _marker() -> str:
    """An end-of-output line nobody can predict, so no file name can forge it."""
    return f"@finalcopy-{secrets.token_hex(16)}@"


class RemoteShell:
    """One ``sh`` on the server running our commands one after the other."""

    def __init__(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self._process = process
        self._synced = False
        self.healthy = True

    @classmethod
    async def start(cls, conn: asyncssh.SSHClientConnection) -> RemoteShell:
        # `exec sh` works from any login shell (bash, zsh, fish, csh) and gives POSIX syntax.
        process = await conn.create_process("exec sh", encoding=None)
        return cls(process)

    async def run(self, command: str) -> list[str]:
        """Output lines of ``command``; raises ``ConnectionLost`` if the shell ended."""
        marker = _marker()
        script = f"{{ {command}\n}} </dev/null 2>/dev/null\necho '{marker}'\n"
        # What the login shell's rc files print comes before a first, separate marker.
        sync = None if self._synced else _marker()
        if sync is not None:
            script = f"echo '{sync}'\n{script}"
        try:
            self._process.stdin.write(script.encode("utf-8", "surrogateescape"))
            if sync is not None:
                await self._read_until(sync)
                self._synced = True
            return await self._read_until(marker)
        except BaseException:
            # Half-read output would be taken for the next request's.
            self.healthy = False
            raise

    async def _read_until(self, marker: str) -> list[str]:
        lines: list[str] = []
        while True:
            line = await self._process.stdout.readline()
            if not line:
                raise asyncssh.ConnectionLost("the remote shell ended")
            text = line.decode("utf-8", "replace").rstrip("\n")
            if text.endswith(marker):
                # Output without a final newline shares the marker's line.
                if text != marker:
                    lines.append(text.removesuffix(marker))
                return lines
            lines.append(text)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._process.stdin.write_eof()
        self._process.close()


class ShellPool:
    """Up to ``size`` shells, started on demand, each serving one command at a time."""

    def __init__(self, conn: asyncssh.SSHClientConnection, size: int) -> None:
        self._conn = conn
        self._size = size
        self._slots = anyio.Semaphore(size)
        self._idle: list[RemoteShell] = []
        self._alive = 0
        """Shells started and not closed, idle or running a command."""
        self._warming: asyncio.Task[None] | None = None

    def warm_up(self) -> None:
        """Start the shells not started yet, in the background.

        Two large files often end together and are hashed at once: the second
        command would otherwise wait for a login shell (0.3 s and more) at the
        very end of the copy.
        """
        if self._warming is None:
            self._warming = asyncio.ensure_future(self._warm())

    async def _warm(self) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            for _ in range(self._size - self._alive):  # once: a failed shell is not retried
                async with self._slots:
                    if self._alive >= self._size:
                        return
                    # Its rc files run meanwhile; its first command reads past their output.
                    self._idle.append(await self._start())

    async def _start(self) -> RemoteShell:
        shell = await RemoteShell.start(self._conn)
        self._alive += 1
        return shell

    def _done_with(self, shell: RemoteShell) -> None:
        if shell.healthy:
            self._idle.append(shell)
        else:
            self._alive -= 1
            shell.close()

    async def run(self, command: str, parse: Callable[[list[str]], _T | None]) -> _T | None:
        """``parse`` of the output of ``command``; ``None`` (and that shell closed) if malformed."""
        async with self._slots:
            shell = self._idle.pop() if self._idle else await self._start()
            try:
                result = parse(await shell.run(command))
                # In sync or not, a shell that printed the unexpected is not trusted again.
                shell.healthy = result is not None
                return result
            finally:
                self._done_with(shell)

    def close(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
        for shell in self._idle:
            shell.close()
        self._idle.clear()


def quote(path: str) -> str | None:
    """``path`` quoted for ``sh``; ``None`` if it is not valid UTF-8 (use SFTP instead)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return shlex.quote(path)


def listable(path: str) -> bool:
    """Whether a hash tool prints ``path`` verbatim on one line of a listing.

    GNU tools and ``b3sum`` escape names holding a backslash or a line break,
    ``xxh128sum`` prints them raw; such names (and names that are not UTF-8)
    are hashed one per command from standard input, or read back over SFTP.
    """
    return not any(c in path for c in "\n\r\\") and quote(path) is not None


def _digest(text: str, algorithm: Algorithm) -> str | None:
    size = len(algorithm.new().hexdigest())
    return text if len(text) == size and _HEX.fullmatch(text) else None


def parse_stdin_digest(lines: list[str], algorithm: Algorithm) -> str | None:
    """The digest of ``tool < file``: exactly one line ``<hex>  -`` (or ``stdin``)."""
    if len(lines) != 1:
        return None
    digest, sep, name = lines[0].partition("  ")
    return _digest(digest, algorithm) if sep and name in STDIN_NAMES else None


def parse_listing(lines: list[str], names: Sequence[str], algorithm: Algorithm) -> list[str] | None:
    """The digests of ``tool -- NAMES...``: one line ``<hex>  <name>`` per name, in order."""
    if len(lines) != len(names):
        return None
    digests: list[str] = []
    for line, name in zip(lines, names, strict=True):
        digest, sep, printed = line.partition("  ")
        checked = _digest(digest, algorithm)
        if checked is None or not sep or printed != name:
            return None
        digests.append(checked)
    return digests


def parse_silence(lines: list[str]) -> bool | None:
    """For commands that print nothing (``sync``): ``True``, or ``None`` if they printed."""
    return None if lines else True


def detect_command() -> str:
    """A command whose output tells which hash tools work: each hashes empty input."""
    return "; ".join(f"{a.checker} </dev/null" for a in ALGORITHMS.values())


def detected_tools(lines: list[str]) -> dict[str, str] | None:
    """Algorithm name → tool, from the output of :func:`detect_command` (``None`` if malformed)."""
    empty = {a.new().hexdigest(): a for a in ALGORITHMS.values()}
    found: dict[str, str] = {}
    for line in lines:
        digest, sep, name = line.partition("  ")
        algorithm = empty.get(digest)
        if algorithm is None or not sep or name not in STDIN_NAMES:
            return None
        found[algorithm.name] = algorithm.checker
    return found


def batches(prefix: str, quoted: list[str]) -> list[tuple[str, int]]:
    """``prefix`` followed by as many quoted paths as fit in a command, with their counts."""
    out: list[tuple[str, int]] = []
    current: list[str] = []
    length = len(prefix)
    for path in quoted:
        if current and length + 1 + len(path) > COMMAND_MAX:
            out.append((prefix + " ".join(current), len(current)))
            current, length = [], len(prefix)
        current.append(path)
        length += 1 + len(path)
    if current:
        out.append((prefix + " ".join(current), len(current)))
    return out


class HashTools:
    """Which hash commands the server runs: probed once per server, beside the transfer."""

    def __init__(self) -> None:
        self._tools: dict[str, str] | None = None
        """What the probe found: None until it answers."""
        self._runs_commands = False
        self._probe: asyncio.Task[None] | None = None
        self._answered = asyncio.Event()
        self._deadline = 0.0
        self._gave_up = False

    @property
    def pending(self) -> bool:
        """The probe has not answered yet (nor been given up): a new connection asks again."""
        return self._tools is None and not self._gave_up

    @property
    def known(self) -> dict[str, str]:
        """What :meth:`get` would return now, without waiting (``{}`` if unknown)."""
        return (self._tools or {}) if self._runs_commands else {}

    def start(self, shells: ShellPool, lost: Callable[[], bool]) -> None:
        """Probe through ``shells``; ``lost()`` tells whether their connection dropped."""
        self.cancel()  # a probe still running ran on a connection that dropped
        self._answered = asyncio.Event()
        self._deadline = asyncio.get_running_loop().time() + PROBE_TIMEOUT
        self._probe = asyncio.ensure_future(self._run(shells, lost))

    async def _run(self, shells: ShellPool, lost: Callable[[], bool]) -> None:
        try:
            tools = await shells.run(detect_command(), detected_tools)
        except (asyncssh.Error, OSError) as exc:
            if not lost():  # else the next connection probes again
                logger.info("the server runs no commands (%s)", describe_ssh_error(exc))
                self._tools = {}
        else:
            if tools is None:
                logger.info("unexpected answer to the hash-tool probe: reading back instead")
            self._tools = tools or {}
            self._runs_commands = tools is not None
            if tools:
                shells.warm_up()
        finally:
            self._answered.set()

    async def wait(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the probe to answer."""
        if self.pending and self._probe is not None:
            with anyio.move_on_after(seconds):
                await self._answered.wait()

    async def get(self, label: str) -> dict[str, str] | None:
        """Algorithm name → the server's command for it; ``None`` when it runs no commands.

        Waits for the probe until :data:`PROBE_TIMEOUT` after it started, then
        gives up on the shell of ``label`` for good, with one warning: files
        are read back over SFTP instead.
        """
        if self.pending and self._probe is not None:
            await self.wait(self._deadline - asyncio.get_running_loop().time())
            # Answered without a result means its connection dropped (the next one probes
            # again); not answered in time means the shell is slow, for good.
            if not self._answered.is_set() and not self._gave_up:
                self._gave_up = True
                self._probe.cancel()
                logger.warning(
                    "the shell of %s did not answer within %.0f s (slow login scripts?): "
                    "verifying by reading files back over SFTP",
                    label,
                    PROBE_TIMEOUT,
                )
        return self._tools if self._runs_commands else None

    def cancel(self) -> None:
        """Stop a probe still running."""
        if self._probe is not None:
            self._probe.cancel()
