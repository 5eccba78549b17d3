"""Hashing files where they lie: a command on the server, else reading back over SFTP.

Verification hashes a committed file on the server (``b3sum``,
``sha256sum``, ``xxh128sum``; one command for a batch of files, see
:mod:`.shell`) and reads it back over SFTP only when the server has no such
command. The server's output is untrusted: a listing is used only when
every line names the expected file, in order.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

import anyio
import anyio.to_thread
import asyncssh

from finalcopy.backends.base import FileTransfer, RetryListener
from finalcopy.backends.sftp.connection import Session, limited
from finalcopy.backends.sftp.shell import (
    batches,
    listable,
    parse_listing,
    parse_stdin_digest,
    quote,
)
from finalcopy.backends.sftp.tree import RemoteTree
from finalcopy.errors import DestinationError
from finalcopy.hashing import Algorithm

_T = TypeVar("_T")

#: Server-side hashing may take ``timeout + size / HASH_RATE_FLOOR`` seconds.
HASH_RATE_FLOOR = 20 * 1024 * 1024
READBACK_BLOCK = 2 * 1024 * 1024


def runner(
    command: str, parse: Callable[[list[str]], _T | None]
) -> Callable[[Session], Awaitable[_T | None]]:
    """An operation for :meth:`RemoteTree.call` that runs ``command`` in a server shell."""
    return lambda session: session.run(command, parse)


class ServerHashes:
    """Digests of the files of ``tree``, computed on the server where it can."""

    def __init__(self, tree: RemoteTree) -> None:
        self.tree = tree

    def time_for(self, size: int) -> float:
        """Seconds hashing ``size`` bytes on the server may take."""
        return self.tree.link.timeout + size / HASH_RATE_FLOOR

    async def hash_file(
        self, path: str, algorithm: Algorithm, on_retry: RetryListener | None = None
    ) -> str:
        """The digest of the stored file ``path``."""
        tree = self.tree
        (st,) = await tree.call("stat", path, partial(tree.lstats, paths=[path]))
        if st is None or st.kind != "file":
            raise DestinationError(f"cannot hash '{tree.describe(path)}': no such file")
        tool = (await tree.link.hash_tools() or {}).get(algorithm.name)
        quoted = quote(tree.remote(path))
        if tool is not None and quoted is not None:
            # From standard input, the tool prints no name: no name can garble its reply.
            parse = partial(parse_stdin_digest, algorithm=algorithm)
            operation = runner(f"{tool} < {quoted}", parse)
            digest = await tree.call("hash", path, operation, self.time_for(st.size), on_retry)
            if digest is not None:
                return digest
            # The command failed (unreadable file?): reading back says why, or succeeds.
        return await tree.call(
            "read back",
            path,
            lambda s: self.read_digest(s, tree.remote(path), algorithm),
            math.inf,
            on_retry,
        )

    async def hash_committed(
        self,
        transfers: Sequence[FileTransfer],
        algorithm: Algorithm,
        on_retry: RetryListener | None = None,
    ) -> None:
        """Fill ``readback_digest``: one server command for many files where possible.

        Only names the tool prints verbatim go into a listing, and a listing
        is used only if every line is ``<digest>  <name>`` for the expected
        name in order; otherwise (a failed file, a stranger's output) each
        file of it is hashed on its own by :meth:`hash_file`. A file that
        fails there stays unset: the engine asks again and gets its error.
        """
        tree = self.tree
        tool = (await tree.link.hash_tools() or {}).get(algorithm.name)
        todo = [t for t in transfers if listable(tree.remote(t.path))] if tool else []
        if len(todo) < 2:
            todo = []  # for one file, hash_file's command is as cheap
        listed = set(todo)  # FileTransfer compares by identity
        alone = [t for t in transfers if t not in listed]
        quoted = [q for t in todo if (q := quote(tree.remote(t.path))) is not None]
        for command, count in batches(f"{tool} -- ", quoted):
            group, todo = todo[:count], todo[count:]
            time_limit = self.time_for(sum(t.source.size for t in group))
            names = [tree.remote(t.path) for t in group]
            parse = partial(parse_listing, names=names, algorithm=algorithm)
            operation = runner(command, parse)
            digests = await tree.call("hash", group[0].path, operation, time_limit, on_retry)
            if digests is None:
                alone += group
                continue
            for transfer, digest in zip(group, digests, strict=True):
                transfer.readback_digest = digest
        for transfer in alone:
            with contextlib.suppress(DestinationError):
                transfer.readback_digest = await self.hash_file(transfer.path, algorithm, on_retry)

    async def read_digest(
        self, session: Session, remote: str, algorithm: Algorithm, limit: int | None = None
    ) -> str:
        """Hash a server file (or its first ``limit`` bytes) by reading it back over SFTP."""
        timeout = self.tree.link.timeout
        hasher = algorithm.new()
        offset = 0
        f = await limited(timeout, session.control.open(remote, "rb", encoding=None))
        try:
            while limit is None or offset < limit:
                want = READBACK_BLOCK if limit is None else min(READBACK_BLOCK, limit - offset)
                data: bytes = await limited(timeout, f.read(want, offset))
                if not data:
                    break
                await anyio.to_thread.run_sync(hasher.update, data)
                offset += len(data)
        finally:
            with contextlib.suppress(asyncssh.Error, OSError):
                await f.close()
        return hasher.hexdigest()
