"""Short commands on the SSH server (hashing, ``sync``) through long-lived shells.

Opening an exec channel costs a round trip plus a start of the user's login
shell, which reads its rc files: 0.3 s per command on a machine whose
``~/.bashrc`` initialises pyenv. A :class:`RemoteShell` pays that once: it runs
``sh`` on the server and feeds it one command per request on standard input,
each followed by an ``echo`` of a marker that ends the request's output.
Commands get ``/dev/null`` as input (so they never eat the next request) and
as error output (so stderr never fills the channel window); a failed command
is recognised by its missing or malformed output and diagnosed over SFTP.
"""

from __future__ import annotations

import contextlib
import shlex

import anyio
import asyncssh

from finalcopy.hashing import ALGORITHMS, Algorithm

#: Longest command line sent at once (a batch of hashed paths).
COMMAND_MAX = 32 * 1024


class RemoteShell:
    """One ``sh`` on the server running our commands one after the other."""

    def __init__(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self._process = process
        self._serial = 0
        self.healthy = True

    @classmethod
    async def start(cls, conn: asyncssh.SSHClientConnection) -> RemoteShell:
        # `exec sh` works from any login shell (bash, zsh, fish, csh) and gives POSIX syntax.
        process = await conn.create_process("exec sh", encoding=None)
        return cls(process)

    async def run(self, command: str) -> list[str]:
        """Output lines of ``command``; raises ``ConnectionLost`` if the shell ended."""
        self._serial += 1
        marker = f"@finalcopy-{self._serial}@"
        script = f"{{ {command}\n}} </dev/null 2>/dev/null\necho '{marker}'\n"
        lines: list[str] = []
        try:
            self._process.stdin.write(script.encode("utf-8", "surrogateescape"))
            while True:
                line = await self._process.stdout.readline()
                if not line:
                    raise asyncssh.ConnectionLost("the remote shell ended")
                text = line.decode("utf-8", "replace").rstrip("\n")
                if text == marker:
                    return lines
                lines.append(text)
        except BaseException:
            # Half-read output would be taken for the next request's.
            self.healthy = False
            raise

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._process.stdin.write_eof()
        self._process.close()


class ShellPool:
    """Up to ``size`` shells, started on demand, each serving one command at a time."""

    def __init__(self, conn: asyncssh.SSHClientConnection, size: int) -> None:
        self._conn = conn
        self._slots = anyio.Semaphore(size)
        self._idle: list[RemoteShell] = []

    async def run(self, command: str) -> list[str]:
        async with self._slots:
            shell = self._idle.pop() if self._idle else await RemoteShell.start(self._conn)
            try:
                return await shell.run(command)
            finally:
                if shell.healthy:
                    self._idle.append(shell)
                else:
                    shell.close()

    def close(self) -> None:
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


def parse_digest(line: str, algorithm: Algorithm) -> str | None:
    """The digest a ``b3sum``-style tool printed first on ``line``, if it looks like one.

    GNU-style tools prefix the line with ``\\`` when they escape the name.
    """
    digest = line.split(" ", 1)[0].removeprefix("\\")
    if len(digest) == len(algorithm.new().hexdigest()) and all(
        c in "0123456789abcdef" for c in digest
    ):
        return digest
    return None


def detect_command() -> str:
    """A command whose output tells which hash tools work: each hashes empty input."""
    return "; ".join(f"{a.checker} </dev/null" for a in ALGORITHMS.values())


def detected_tools(lines: list[str]) -> dict[str, str]:
    """Algorithm name → tool, from the output of :func:`detect_command`."""
    empty = {a.new().hexdigest(): a for a in ALGORITHMS.values()}
    found: dict[str, str] = {}
    for line in lines:
        algorithm = empty.get(line.split(" ", 1)[0])
        if algorithm is not None:
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
