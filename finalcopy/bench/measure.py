"""Measuring one copy: wall time, CPU time, peak memory, in this process or in a command.

Two kinds of run are timed:

* **in this process** (:class:`Stopwatch`), for the engine: wall time from
  ``time.perf_counter``, CPU time from ``time.process_time`` (every thread
  of the process: the hashing and writing workers too), and the peak
  resident set size. ``ru_maxrss`` is a high-water mark of the whole
  process, so on Linux the mark is reset before each run (writing ``5`` to
  ``/proc/self/clear_refs``) and read back as ``VmHWM``: each run gets its
  own peak. Where that is refused the process-wide mark is reported, and
  :attr:`Usage.rss_scope` says so.
* **a command** (:func:`run_command`), for the other tools: ``os.wait4``
  gives its CPU time (with its children's). Its peak RSS comes from GNU
  ``time`` (``/usr/bin/time -f %M``), the largest process of the tool's tree:
  ``ru_maxrss`` of a child of this process cannot be used, since Linux
  counts in it the memory image the child had before ``exec``, a copy of
  ours (tens of MiB for ``cp``). Without GNU time it is not measured.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from finalcopy.backends.helpers import helpers_cpu_seconds
from finalcopy.backends.local import durability

__all__ = [
    "CommandResult",
    "Spread",
    "Stopwatch",
    "Usage",
    "first_line",
    "run_command",
    "sync_filesystem",
]

RssScope = Literal["run", "process"]
TIME_BIN = "/usr/bin/time"
_SIGNAL_RE = re.compile(r"Command terminated by signal (\d+)")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


class Spread(NamedTuple):
    """Median, lowest and highest of a few measurements."""

    median: float
    """The figure a table shows and a ratio uses: one slow run does not move it."""
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        """The spread of ``values``; None when there are none."""
        if not values:
            return None
        return cls(statistics.median(values), min(values), max(values))


@dataclass
class Usage:
    """What one in-process run cost."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss: int | None = None
    """Bytes; see :attr:`rss_scope`."""
    rss_scope: RssScope = "run"
    """``run``: the peak of this run alone; ``process``: the process's high-water mark so far."""


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ≥ 4.0); False if refused."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _peak_rss(scope: RssScope) -> int | None:
    """``VmHWM`` after a reset, else ``ru_maxrss`` (KiB on Linux), in bytes."""
    if scope == "run":
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in _STATUS.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Stopwatch:
    """Times the block it guards (``with Stopwatch() as usage:``) into a :class:`Usage`.

    CPU is this process's and its helper processes' (:mod:`finalcopy.backends.helpers`).
    """

    def __init__(self) -> None:
        self.usage = Usage()
        self._wall = self._cpu = 0.0

    def __enter__(self) -> Usage:
        self.usage.rss_scope = "run" if _reset_peak_rss() else "process"
        self._cpu = _cpu_seconds()
        self._wall = time.perf_counter()
        return self.usage

    def __exit__(self, *exc_info: object) -> None:
        self.usage.wall_s = time.perf_counter() - self._wall
        self.usage.cpu_s = _cpu_seconds() - self._cpu
        self.usage.peak_rss = _peak_rss(self.usage.rss_scope)


def _cpu_seconds() -> float:
    return time.process_time() + helpers_cpu_seconds()


@dataclass(frozen=True)
class CommandResult:
    """What one command did: its times, its peak memory, and why it failed if it did."""

    wall_s: float
    cpu_s: float
    max_rss_kib: int | None
    error: str | None
    """None on success; else ``exit status N``, ``killed by SIGKILL``, ``timed out``…"""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@contextlib.contextmanager
def _stopper(
    pid: int, timeout: float | None, cancel: threading.Event | None
) -> Iterator[list[str]]:
    """Kill ``pid``'s process group when ``timeout`` passes or ``cancel`` is set.

    Yields a list that receives why it was killed, if it was.
    """
    why: list[str] = []
    done = threading.Event()
    deadline = None if timeout is None else time.monotonic() + timeout

    def watch() -> None:
        while not done.wait(0.05):
            if cancel is not None and cancel.is_set():
                why.append("interrupted")
            elif deadline is not None and time.monotonic() > deadline:
                why.append(f"timed out after {timeout:g} s")
            else:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            return

    watcher = threading.Thread(target=watch, name="bench-command-stopper", daemon=True)
    watcher.start()
    try:
        yield why
    finally:
        done.set()
        watcher.join()


def run_command(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdout: Path | None = None,
    stderr: Path | None = None,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
    sync: Path | None = None,
) -> CommandResult:
    """Run ``argv`` and time it; ``sync``: also flush that file system, inside the timing.

    The command runs in its own session, so a timeout or ``cancel`` stops it
    and everything it started. Its output goes to ``stdout``/``stderr``
    (files) or nowhere; an error names its first useful line.
    """
    with contextlib.ExitStack() as files:
        out = files.enter_context(stdout.open("wb")) if stdout else subprocess.DEVNULL
        err = files.enter_context(stderr.open("wb")) if stderr else subprocess.DEVNULL
        rss_file = Path(files.enter_context(tempfile.TemporaryDirectory())) / "rss"
        wrapped = list(argv)
        if os.access(TIME_BIN, os.X_OK):
            wrapped = [TIME_BIN, "-f", "%M", "-o", str(rss_file), *argv]
        started = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=env, cwd=cwd, start_new_session=True)  # fmt: skip
        with _stopper(proc.pid, timeout, cancel) as why:
            _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if sync is not None and not why:
            sync_filesystem(sync)
        wall = time.perf_counter() - started
        report = rss_file.read_text(errors="replace") if rss_file.exists() else ""
    cpu = usage.ru_utime + usage.ru_stime
    rss = _time_rss(report)
    if why:
        return CommandResult(wall, cpu, rss, why[0])
    # GNU time exits 128+N for a signal; name it, since SIGKILL usually means the OOM killer.
    killed = _SIGNAL_RE.search(report)
    if os.WIFSIGNALED(status) or killed:
        number = int(killed.group(1)) if killed else os.WTERMSIG(status)
        return CommandResult(wall, cpu, rss, f"killed by {_signal_name(number)}")
    if proc.returncode == 0:
        return CommandResult(wall, cpu, rss, None)
    message = first_line(stderr.read_bytes()) if stderr else ""
    if not message and stdout:
        message = first_line(stdout.read_bytes())
    status_text = f"exit status {proc.returncode}"
    return CommandResult(wall, cpu, rss, status_text + (f": {message}" if message else ""))


def _time_rss(report: str) -> int | None:
    """The KiB GNU time wrote last (after any ``Command exited…`` line), or None."""
    lines = report.strip().splitlines()
    return int(lines[-1]) if lines and lines[-1].strip().isdigit() else None


def sync_filesystem(path: Path) -> None:
    """Flush the file system holding ``path`` (``syncfs``), or every one where that is missing.

    A tool that leaves its writes in the page cache would otherwise finish
    early against finalcopy, which makes every file durable before it counts
    it as copied.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        os.sync()
        return
    try:
        durability.syncfs(fd)
    except OSError:  # no syncfs here, or it failed: flushing everything still counts the cost
        os.sync()
    finally:
        os.close(fd)


def first_line(raw: bytes) -> str:
    """The line of a tool's stderr that best says what went wrong.

    The first non-empty line, except for Python tracebacks, whose first line
    says nothing and whose last line holds the exception.
    """
    lines = [ln.strip() for ln in raw.decode(errors="replace").splitlines() if ln.strip()]
    if not lines:
        return ""
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]
