"""Helper processes: batches sent on more than one core.

A command's Python runs on one core: one interpreter lock holds its event
loop and its threads. That is the limit of two kinds of copies:

* **Small files to a local disk.** A small file costs about 90 µs of
  Python: 60 in the thread that sends it (17 system calls, two hashes, the
  objects around them), the rest in the event loop that concludes it. Two
  threads sending batches at once took twice the CPU, trading the lock; two
  ``finalcopy copy`` processes each copying half of 10,000 × 4 KiB files to
  tmpfs took 0.59× the time of one copying them all, on two cores. One
  helper took that copy from 1.35 s to 1.14 s on tmpfs and from 2.84 s to
  2.43 s on ext4 (medians, runs alternated); two were no better than one,
  since the parent, which concludes every file, needs a CPU of its own.
* **SFTP.** The client's CPU is asyncssh's Python, packet by packet, in the
  event loop. A helper is a second connection on a second core
  (:mod:`.sftp.elsewhere`): 1 GiB of project files to a loopback sshd went
  from 5.97 s to 5.35 s.

So the command forks helpers (:meth:`Helpers.fork`), one per CPU but one and
no more than ``--jobs`` less one (batches in flight beyond ``--jobs`` there
are not), before it starts any thread, when forking is safe and costs a few
milliseconds; a helper process started later would pay a new interpreter
and its imports (0.3 to 0.5 s measured, most of a 10,000-file copy). While
the backend sends a batch itself, the next one goes to an idle helper. The
backend hands it a picklable function that sends the batch as the backend
would (a local one its own ``_put_batch``: the same temporary names, fsync
or syncfs, rename and read-back), and the outcomes come back pickled; a
large batch reports the bytes read as it goes, so the command's progress
moves as if it read them itself. The parent keeps the rest (plan, ledger,
manifest, lock, events).

Only sources another process may read in their place go
(:attr:`~finalcopy.backends.source.ChunkSource.portable`): not those with
content inspectors or a bandwidth limit, which live in this process, nor
the pipeline's (``run``), whose deletion relies on proofs this process
observed and whose rollback must know every name written.

What can go wrong, and what it leaves:

* **Interruption** (Ctrl-C, a signal): helpers ignore SIGINT and SIGTERM
  (the terminal sends Ctrl-C to every process of the command); the command
  tells each busy helper instead (``SIGUSR1``), which stops its batch at the
  next chunk, as the command's own threads do, and answers
  :class:`~finalcopy.errors.Interrupted` or the files it had finished, which
  are concluded like any other. A helper told to stop by anyone else fails
  its batch's files, so none goes missing from the report.
* **A helper dies** (killed, out of memory): each file of its batch fails
  with that error; the helper is not used again. A file it had renamed into
  place stays, unrecorded, as after a kill -9 (a re-run checks or copies it
  again); its temporary files are removed, or resumed over SFTP, by the next
  run that writes there.
* **The parent dies**: the kernel kills its helpers (``PR_SET_PDEATHSIG``),
  so nothing writes on after it, as with a thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import anyio.to_thread

from finalcopy.backends.base import FileTransfer
from finalcopy.backends.helper_wire import (
    SendBatch,
    adopt,
    decode_request,
    decode_result,
    encode_request,
    outcome_of,
    progress_message,
    read_message,
    read_reply,
    result_message,
    write_message,
)
from finalcopy.backends.source import STOP_ELSEWHERE
from finalcopy.errors import DestinationError, Interrupted
from finalcopy.hashing import Algorithm

__all__ = ["HelperUnavailable", "Helpers", "SendBatch", "helpers_cpu_seconds"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
#: A batch this large (a big file) reports its progress as it goes, this often; a batch of
#: small files takes milliseconds and reports only its end.
REPORT_FROM = 8 << 20
REPORT_SECONDS = 0.2


_cpu_seconds = 0.0
"""CPU time the helpers of this process spent on the batches they sent."""


def helpers_cpu_seconds() -> float:
    """CPU seconds this process's helpers spent sending batches, so far: what
    :func:`time.process_time` cannot see (``finalcopy bench`` adds it to the copy's)."""
    return _cpu_seconds


class HelperUnavailable(Exception):
    """Raised by a send function in a helper that cannot send anything (over SFTP: its
    connection could not be opened): nothing of the batch was sent, the command sends it."""


class HelperDied(Exception):
    """The helper closed its end before answering (it died, or was killed)."""


@dataclass
class _Helper:
    pid: int
    requests: int
    """Write end of the pipe the helper reads batches from."""
    replies: int
    """Read end of the pipe the helper answers on."""

    def call(self, request: bytes, transfers: list[FileTransfer]) -> bytes:
        """Send one request and wait for its reply (blocking: run in a worker thread),
        setting the bytes read of each transfer's source as the helper reports them."""

        def progress(read: list[int]) -> None:
            for transfer, done in zip(transfers, read, strict=True):
                transfer.source.done = done

        try:
            write_message(self.requests, request)
            reply = read_reply(self.replies, progress)
        except OSError as exc:  # EPIPE: the helper is gone
            raise HelperDied(os.strerror(exc.errno or 0)) from None
        if reply is None:
            raise HelperDied("it closed its pipe")
        return reply

    def close(self) -> None:
        for fd in (self.requests, self.replies):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


class Helpers:
    """Helper processes, each sending one batch at a time; :meth:`close` ends them."""

    def __init__(self, helpers: list[_Helper]) -> None:
        self._idle = helpers
        self._all = list(helpers)
        self.sent = 0
        """Batches the helpers sent."""

    @classmethod
    def fork(cls, count: int) -> Helpers | None:
        """``count`` helpers forked now; None when ``count`` < 1 or a thread already runs.

        Forking a process with threads can copy a lock another thread held, and
        the child would wait for it forever: so only a single-threaded process
        forks, before its event loop and worker threads start.
        """
        if count < 1 or threading.active_count() > 1:
            return None
        helpers: list[_Helper] = []
        parent = os.getpid()
        for _ in range(count):
            to_helper, requests = os.pipe()
            replies, from_helper = os.pipe()
            pid = os.fork()
            if pid == 0:  # the helper: it never returns
                try:
                    for other in helpers:  # so each helper sees its own pipe close
                        os.close(other.requests)
                        os.close(other.replies)
                    os.close(requests)
                    os.close(replies)
                    _serve(to_helper, from_helper, parent)
                except BaseException:
                    os._exit(1)
                os._exit(0)
            os.close(to_helper)
            os.close(from_helper)
            helpers.append(_Helper(pid, requests, replies))
        return cls(helpers)

    async def offer(
        self, send: SendBatch, transfers: list[FileTransfer], algorithm: Algorithm
    ) -> bool:
        """:meth:`send` if a helper is idle and the sources may go: True when sent there,
        False when the caller is to send ``transfers`` itself (untouched)."""
        if not self._idle or not all(t.source.portable for t in transfers):
            return False
        try:
            await self.send(send, transfers, algorithm)
        except HelperUnavailable:
            return False
        return True

    async def send(
        self, send: SendBatch, transfers: list[FileTransfer], algorithm: Algorithm
    ) -> None:
        """``send(transfers, algorithm)`` in an idle helper (there must be one: :meth:`offer`).

        The outcomes come back into ``transfers`` and their sources. Raises
        :class:`HelperUnavailable` when the helper could send nothing (it is not
        used again): ``transfers`` are untouched, and the caller sends them
        itself. Cancelled (the copy is interrupted), it tells the helper to
        stop the batch at its next chunk, as the command's own threads do, and
        still waits for the outcome: :class:`~finalcopy.errors.Interrupted`,
        or the files the helper finished.
        """
        request = encode_request(send, transfers, algorithm)
        helper = self._idle.pop()
        try:
            reply, stopped = await _call_telling_stop(helper, request, transfers)
        except HelperDied as exc:
            helper.close()  # reaped, never used again
            _fail(transfers, f"stopped ({exc})")
            return
        outcome = decode_result(reply)
        if isinstance(outcome, HelperUnavailable):
            log.warning("a helper process cannot send (%s); the command sends its share", outcome)
            helper.close()
            raise outcome
        self._idle.append(helper)
        self.sent += 1
        if isinstance(outcome, Interrupted) and not stopped:
            # Not asked by this command (a stray signal): its files fail, none is lost
            # from the report, and the copy goes on.
            _fail(transfers, "was told to stop")
            return
        if isinstance(outcome, BaseException):
            raise outcome  # Interrupted as asked, or a defect, as the thread would raise it
        outcomes, cpu_seconds = outcome
        global _cpu_seconds
        _cpu_seconds += cpu_seconds
        for transfer, sent in zip(transfers, outcomes, strict=True):
            adopt(transfer, sent)

    @property
    def pids(self) -> list[int]:
        return [helper.pid for helper in self._all]

    def close(self) -> None:
        """End every helper (each finishes its batch, sees its pipe closed, exits)."""
        for helper in self._all:
            helper.close()
        self._idle.clear()
        log.debug("helper processes sent %d batch(es)", self.sent)


def _fail(transfers: list[FileTransfer], what: str) -> None:
    """Each file of a batch its helper could not conclude fails, saying what happened."""
    for transfer in transfers:
        transfer.error = DestinationError(
            f"the helper process sending '{transfer.path}' {what}; "
            "a re-run copies or checks it again"
        )


async def _call_telling_stop(
    helper: _Helper, request: bytes, transfers: list[FileTransfer]
) -> tuple[bytes, bool]:
    """The helper's reply to ``request``, and whether it was told to stop on the way.

    Its thread cannot be abandoned (the outcome of every file must come back),
    so a cancellation of the caller is passed on as ``SIGUSR1``: the helper
    stops its batch at the next chunk and answers.
    """
    replies: list[bytes | HelperDied] = []
    answered = anyio.Event()

    async def wait() -> None:
        # Shielded from its first line: a cancellation that came before the request
        # left would otherwise skip it, and the batch would have no outcome at all.
        with anyio.CancelScope(shield=True):
            try:
                replies.append(await anyio.to_thread.run_sync(helper.call, request, transfers))
            except HelperDied as exc:
                replies.append(exc)
            finally:
                answered.set()

    stopped = False
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            try:
                await answered.wait()
            except anyio.get_cancelled_exc_class():
                stopped = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(helper.pid, signal.SIGUSR1)
                with anyio.CancelScope(shield=True):
                    await answered.wait()
                raise
    except anyio.get_cancelled_exc_class():
        # The outcome came back all the same: it is returned, to be concluded like a
        # thread's; the scope stays cancelled, so the caller's next await stops it.
        if not replies:
            raise
    (reply,) = replies
    if isinstance(reply, HelperDied):
        raise reply
    return reply, stopped


def _serve(requests: int, replies: int, parent: int) -> None:
    """The helper's life: batches in, outcomes out, until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The command is interrupted: the batch in hand stops at its next chunk.
    signal.signal(signal.SIGUSR1, lambda *_: STOP_ELSEWHERE.set())
    nothing = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # a pipe reading the command's output ends with the command
        os.dup2(nothing, fd)
    os.close(nothing)
    import ctypes  # here, in the helper: the command itself never needs it

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        return  # the parent died before the line above (this process was handed on)
    writing = threading.Lock()  # progress and outcome share the pipe
    while (request := read_message(requests)) is not None:
        # A stop meant for the batch before, arrived once it was done, is not this one's.
        STOP_ELSEWHERE.clear()
        try:
            started = time.process_time()
            send, transfers, algorithm = decode_request(request)
            with _reporting(transfers, replies, writing):
                send(transfers, algorithm)
            outcomes = [outcome_of(transfer) for transfer in transfers]
            reply = result_message((outcomes, time.process_time() - started))
        except BaseException as exc:
            reply = result_message(exc)
        with writing:
            write_message(replies, reply)


@contextlib.contextmanager
def _reporting(
    transfers: list[FileTransfer], replies: int, writing: threading.Lock
) -> Iterator[None]:
    """While the block sends a large batch, its bytes read so far, every REPORT_SECONDS."""
    if sum(t.source.size for t in transfers) < REPORT_FROM:
        yield
        return
    stop = threading.Event()

    def report() -> None:
        last: list[int] = []
        while not stop.wait(REPORT_SECONDS):
            done = [t.source.done for t in transfers]
            if done != last:
                with writing:
                    write_message(replies, progress_message(done))
                last = done

    reporter = threading.Thread(target=report, name="helper-progress", daemon=True)
    reporter.start()
    try:
        yield
    finally:
        stop.set()
        reporter.join()
