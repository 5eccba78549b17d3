"""What passes between the command and a helper process, over a pair of pipes.

Each message is a length-prefixed frame. The command sends a request (a
picklable send function, its files as plain tuples, the algorithm); the
helper answers with progress messages for a large batch (bytes read so
far, one count per file: :func:`progress_message`) and one result (each
file's :data:`Outcome`, or the exception that stopped the batch:
:func:`result_message`). Outcomes are
plain values, not pickled transfers and sources: nothing has to be rebuilt
on either side, which is most of what a small file costs in a helper.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Callable

from finalcopy.backends.base import FileTransfer
from finalcopy.backends.phases import PhaseTimes
from finalcopy.backends.source import SourceOutcome
from finalcopy.errors import FinalcopyError
from finalcopy.hashing import Algorithm

__all__ = [
    "Outcome",
    "Result",
    "SendBatch",
    "adopt",
    "decode_request",
    "decode_result",
    "encode_request",
    "outcome_of",
    "progress_message",
    "read_message",
    "read_reply",
    "result_message",
    "write_message",
]

_LENGTH = struct.Struct("!Q")
_PROGRESS, _RESULT = b"P", b"R"
"""The kinds of a helper's messages: bytes read so far (a list, one per file), the outcome."""

SendBatch = Callable[[list[FileTransfer], Algorithm], None]
"""Sends a batch in the calling thread, filling in each transfer's outcome (picklable)."""


def encode_request(send: SendBatch, transfers: list[FileTransfer], algorithm: Algorithm) -> bytes:
    """A batch for a helper: ``send`` by name, each file as what a backend starts from."""
    files = [(t.path, t.source, t.mode, t.mtime_ns, t.temp, t.readback) for t in transfers]
    return pickle.dumps((send, files, algorithm), pickle.HIGHEST_PROTOCOL)


def decode_request(request: bytes) -> tuple[SendBatch, list[FileTransfer], Algorithm]:
    """The helper's side of :func:`encode_request`."""
    send, files, algorithm = pickle.loads(request)
    transfers = [
        FileTransfer(path, source, mode, mtime_ns, temp=temp, readback=readback)
        for path, source, mode, mtime_ns, temp, readback in files
    ]
    return send, transfers, algorithm


Outcome = tuple[
    FinalcopyError | None, str | None, int, int, int, tuple[float, float, float], SourceOutcome
]
"""What sending a file in a helper found: the fields of :class:`FileTransfer` a backend fills
and its source's outcome, as plain values (no objects to rebuild on either side)."""


Result = tuple[list[Outcome], float] | BaseException
"""A batch's reply: each file's outcome and the helper's CPU seconds, or what stopped it."""


def outcome_of(transfer: FileTransfer) -> Outcome:
    times = transfer.times
    return (
        transfer.error,
        transfer.readback_digest,
        transfer.dest_mtime_ns,
        transfer.resumed_from,
        transfer.attempts,
        (times.stream, times.commit, times.verify),
        transfer.source.outcome(),
    )


def adopt(transfer: FileTransfer, sent: Outcome) -> None:
    """``transfer`` as its helper left it (see :func:`outcome_of`)."""
    (
        transfer.error,
        transfer.readback_digest,
        transfer.dest_mtime_ns,
        transfer.resumed_from,
        transfer.attempts,
        times,
        read,
    ) = sent
    transfer.times = PhaseTimes(*times)
    transfer.source.adopt(read)


def progress_message(done: list[int]) -> bytes:
    """The bytes read so far of each file of the batch in hand (a large batch's)."""
    return _PROGRESS + pickle.dumps(done, pickle.HIGHEST_PROTOCOL)


def result_message(result: Result) -> bytes:
    """The batch's reply, its last message."""
    return _RESULT + pickle.dumps(result, pickle.HIGHEST_PROTOCOL)


def read_reply(fd: int, on_progress: Callable[[list[int]], None]) -> bytes | None:
    """The reply to a request, still encoded (:func:`decode_result`), each progress message
    before it handed to ``on_progress``; None when the pipe ends first."""
    while (message := read_message(fd)) is not None:
        if message[:1] == _RESULT:
            return message[1:]
        on_progress(pickle.loads(message[1:]))
    return None


def decode_result(reply: bytes) -> Result:
    """The other side of :func:`result_message`."""
    result: Result = pickle.loads(reply)
    return result


def write_message(fd: int, data: bytes) -> None:
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def read_message(fd: int) -> bytes | None:
    """One message, or None at end of file."""
    head = _read_exactly(fd, _LENGTH.size)
    if head is None:
        return None
    (length,) = _LENGTH.unpack(head)
    return _read_exactly(fd, length)


def _read_exactly(fd: int, size: int) -> bytes | None:
    parts: list[bytes] = []
    while size:
        part = os.read(fd, min(size, 1 << 20))
        if not part:
            return None
        parts.append(part)
        size -= len(part)
    return b"".join(parts)
