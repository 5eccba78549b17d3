"""One timed run: finalcopy's engine in this process, or another tool as a command.

Each run copies the workload into a fresh child of the bench folder and
that child is removed afterwards, untimed, so the destination never holds
more than one copy. On a local destination the file system is flushed
before each run (untimed, so one run's write-back is not charged to the
next), and after another tool's command inside its timing: finalcopy makes
every file durable before it counts it, and a tool leaving its writes in the
page cache would otherwise finish early.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio.to_thread

from finalcopy.backends.removal import remove_tree
from finalcopy.bench.folder import BenchFolder, local_root
from finalcopy.bench.matrix import Run
from finalcopy.bench.measure import Stopwatch, run_command, sync_filesystem
from finalcopy.bench.tools import Job, Tool
from finalcopy.engine import CopyOptions, copy_tree

__all__ = ["Workload", "copy_once", "tool_once"]


@dataclass(frozen=True)
class Workload:
    """The tree every run copies, and where it lives."""

    path: Path
    files: int
    bytes: int
    where: str
    """Said in the output: which folder, and why there."""
    generated: bool
    generate_s: float = 0.0


async def _settle(folder: BenchFolder) -> None:
    """Flush a local destination before a run, untimed."""
    root = local_root(folder)
    if root is not None:
        await anyio.to_thread.run_sync(sync_filesystem, root)


async def copy_once(
    folder: BenchFolder,
    workload: Workload,
    options: CopyOptions,
    sub: str,
    cancel: threading.Event,
    at: tuple[int, int],
) -> Run | None:
    """Copy the workload with the engine into ``sub``; None when interrupted.

    ``at`` is the run's (round, position). A copy that fails some files is a
    run with an error; one that cannot start at all raises.
    """
    await _settle(folder)
    try:
        with Stopwatch() as usage:
            report = await copy_tree(
                workload.path, folder.backend, options, dest=sub, cancel=cancel
            )
    finally:
        with anyio.CancelScope(shield=True):
            await remove_tree(folder.backend, sub)
    if report.interrupted:
        return None
    error = None
    if report.failed:
        path, why = next(iter(report.failed.items()))
        error = f"{len(report.failed)} file(s) failed, e.g. {path}: {why}"
    return Run(*at, usage.wall_s, report.times, usage.cpu_s, report.bytes_copied, report.copied,
               usage.peak_rss, usage.rss_scope, error)  # fmt: skip


async def tool_once(
    tool: Tool,
    job: Job,
    folder: BenchFolder,
    workload: Workload,
    sub: str,
    cancel: threading.Event,
    at: tuple[int, int],
) -> Run | None:
    """Run ``tool`` into ``sub``, check that everything landed; None when interrupted."""
    await _settle(folder)
    env = {**os.environ, "LC_ALL": "C.UTF-8", **(tool.env(job) if tool.env else {})}
    if tool.before_each is not None:
        tool.before_each(job)
    command = partial(
        run_command, tool.argv(job), env=env, stdout=job.scratch / "stdout",
        stderr=job.scratch / "stderr", cancel=cancel, sync=local_root(folder),
    )  # fmt: skip
    try:
        outcome = await anyio.to_thread.run_sync(command)
        if cancel.is_set():
            return None
        error = outcome.error
        if error is None:
            error = await _check_copy(folder, workload, sub)
    finally:
        with anyio.CancelScope(shield=True):
            await remove_tree(folder.backend, sub)
    rss = outcome.max_rss_kib * 1024 if outcome.max_rss_kib else None
    return Run(*at, outcome.wall_s, cpu_s=outcome.cpu_s, bytes=workload.bytes,
               files=workload.files, peak_rss=rss, rss_scope="command", error=error)  # fmt: skip


async def _check_copy(folder: BenchFolder, workload: Workload, sub: str) -> str | None:
    """Why the copy in ``sub`` is not complete, or None (counts and bytes of regular files).

    Tools disagree on whether ``SRC DST`` lands in ``DST`` or ``DST/SRC``:
    everything below ``sub`` counts.
    """
    sizes = [st.size for _path, st in await folder.backend.walk(sub) if st.kind == "file"]
    if len(sizes) < workload.files or sum(sizes) < workload.bytes:
        return (
            f"incomplete copy: {len(sizes)} of {workload.files} files, "
            f"{sum(sizes)} of {workload.bytes} bytes"
        )
    return None
