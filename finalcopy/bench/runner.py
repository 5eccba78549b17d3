"""A benchmark from start to end: the workload, the bench folder, the settings, the other tools.

1. The source: ``--source DIR`` as it is (only read), or a generated tree
   (:mod:`.workload`) in a folder where reading it is not what limits a copy.
2. Room on DEST for one copy at a time, then ``DEST/finalcopy-bench-<random>/``
   (:mod:`.folder`), removed at the end whatever happens.
3. Every setting ``runs`` times, in rotated rounds (:mod:`.matrix`), each a
   timed engine copy into a fresh child folder (:mod:`.runs`).
4. With ``--compare``, the other tools alternated with finalcopy's best
   setting, round by round, on the same workload and destination.

Nothing here prints: progress goes to the ``say`` callback, warnings to
``warn``, and the result is a :class:`BenchResult` for :mod:`.report`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from finalcopy.backends.options import DestinationOptions, SshLocation
from finalcopy.bench.folder import PREFIX, BenchFolder, bench_folder
from finalcopy.bench.machine import machine_facts
from finalcopy.bench.matrix import Run, Setting, SettingResult, ToolResult, rotated, schedule
from finalcopy.bench.runs import Workload, copy_once, tool_once
from finalcopy.bench.tools import Job, SshTarget, Tool, select_tools
from finalcopy.bench.workload import estimated_bytes, generate_sized, scratch_parent
from finalcopy.engine import CopyOptions
from finalcopy.engine.plan import scan
from finalcopy.errors import UsageError, describe_os_error

__all__ = ["BenchPlan", "BenchResult", "run_bench"]

T = TypeVar("T")
MiB = 1 << 20
#: Beyond one copy of the workload: finalcopy's manifest and state, folder entries.
SPACE_MARGIN = 16 * MiB


@dataclass(frozen=True)
class BenchPlan:
    """What to measure, as the command line asked for it."""

    dest: str
    dest_options: DestinationOptions
    settings: Sequence[Setting]
    options_for: Callable[[Setting], CopyOptions]
    """The engine's options for a setting (the CLI keeps its other transfer options)."""
    runs: int
    size: int
    small_files: int
    source: Path | None = None
    compare: Sequence[str] | None = None
    """Tool keys for ``--compare``; None: no comparison."""
    seed: int = 0


@dataclass
class BenchResult:
    """Everything measured, for the table, the verdict and the JSON."""

    plan: BenchPlan
    machine: dict[str, str]
    destination: dict[str, Any] = field(default_factory=dict)
    workload: Workload | None = None
    results: list[SettingResult] = field(default_factory=list)
    reference: SettingResult | None = None
    """finalcopy's runs alternated with the other tools (its best setting)."""
    tools: list[ToolResult] = field(default_factory=list)
    interrupted: bool = False

    def best(self) -> SettingResult | None:
        """The setting with the highest median MiB/s."""
        ranked = [(spread.median, r) for r in self.results if (spread := r.mib_s()) and not r.error]
        return max(ranked, key=lambda pair: pair[0])[1] if ranked else None


Say = Callable[[str], None]


async def run_bench(plan: BenchPlan, say: Say, warn: Say, cancel: threading.Event) -> BenchResult:
    """Measure ``plan``; the destination is left as it was found, also on errors and Ctrl-C."""
    result = BenchResult(plan, machine_facts())
    async with AsyncExitStack() as stack:
        source_files, source_bytes, parent, where = await anyio.to_thread.run_sync(
            _source_needs, plan
        )
        needed = source_bytes + source_bytes // 20 + SPACE_MARGIN
        if parent is not None and _same_device(parent, plan.dest):
            needed += source_bytes  # the generated source lives on DEST's file system too
        folder = await stack.enter_async_context(
            bench_folder(plan.dest, plan.dest_options, needed, warn)
        )
        result.destination = _describe(folder, plan.dest)
        if parent is None:
            assert plan.source is not None
            where = f"{plan.source} (--source)"
            workload = Workload(plan.source, source_files, source_bytes, where, False)
        else:
            made = _no_os_error(parent, tempfile.mkdtemp, prefix=f"{PREFIX}src-", dir=parent)
            scratch = Path(made)
            stack.callback(shutil.rmtree, scratch, ignore_errors=True)
            workload = await _generate(plan, scratch / "workload", where, cancel)
        result.workload = workload
        say(
            f"workload: {workload.files} files, {workload.bytes / MiB:.1f} MiB, "
            f"in {workload.where}; writing in {folder.backend.root}"
        )
        result.results = await _matrix(plan, folder, workload, say, cancel)
        if plan.compare is not None and not cancel.is_set():
            tool_scratch = Path(tempfile.mkdtemp(prefix="finalcopy-bench-tools-"))
            stack.callback(shutil.rmtree, tool_scratch, ignore_errors=True)
            await _compare(result, folder, workload, tool_scratch, say, cancel)
    result.interrupted = cancel.is_set()
    return result


def _source_needs(plan: BenchPlan) -> tuple[int, int, Path | None, str]:
    """Files and bytes of the source; where to generate it (None: ``--source``) and why there.

    A generated workload's figures are estimates (an upper bound for the bytes).
    """
    if plan.source is not None:
        if not plan.source.is_dir():
            raise UsageError(f"--source '{plan.source}': not a folder")
        source = scan(plan.source)
        return len(source.files), source.total_bytes, None, ""
    needed = estimated_bytes(plan.size, plan.small_files)
    parent, where = scratch_parent(needed)
    if shutil.disk_usage(parent).free < needed + needed // 10:
        raise UsageError(
            f"no room for a {needed // MiB} MiB workload in {parent}; "
            "use a smaller --size, or --source DIR"
        )
    return 0, needed, parent, where


def _no_os_error(where: Path, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``func(...)``, an ``OSError`` (a full /dev/shm, say) told as a one-line usage error."""
    try:
        return func(*args, **kwargs)
    except OSError as exc:
        raise UsageError(
            f"cannot generate the workload in {where}: {describe_os_error(exc)}; "
            "use a smaller --size, or --source DIR"
        ) from None


def _same_device(parent: Path, dest: str) -> bool:
    try:
        return os.stat(parent).st_dev == os.stat(dest).st_dev
    except OSError:
        return False  # a remote destination, or one that does not exist (refused later)


async def _generate(plan: BenchPlan, root: Path, where: str, cancel: threading.Event) -> Workload:
    started = time.perf_counter()
    make = partial(generate_sized, root, plan.size, plan.small_files, seed=plan.seed, cancel=cancel)
    files, total = await anyio.to_thread.run_sync(_no_os_error, root.parent, make)
    return Workload(root, files, total, where, True, time.perf_counter() - started)


def _target(folder: BenchFolder) -> str:
    """``sftp``, ``ntfs`` (no POSIX metadata) or ``local``: which tools apply."""
    if folder.remote is not None:
        return "sftp"
    return "local" if folder.backend.capabilities.posix_metadata else "ntfs"


def _describe(folder: BenchFolder, dest: str) -> dict[str, Any]:
    return {
        "dest": dest,
        "bench_folder": folder.backend.root,
        "kind": _target(folder),
        "strategy": folder.backend.strategy,
        "free_bytes": folder.free,
    }


async def _matrix(
    plan: BenchPlan, folder: BenchFolder, workload: Workload, say: Say, cancel: threading.Event
) -> list[SettingResult]:
    results = [SettingResult(setting) for setting in plan.settings]
    count = len(results)
    for round_, position, index in schedule(count, plan.runs):
        result = results[index]
        if cancel.is_set():
            break
        if result.error:
            continue  # a failed setting is not run again
        what = (
            f"run {round_ + 1}/{plan.runs} · setting {index + 1}/{count} · {result.setting.label}"
        )
        say(f"{what} …")
        options = plan.options_for(result.setting)
        run = await copy_once(folder, workload, options, f"run-{round_ + 1}-{index + 1}",
                              cancel, (round_, position))  # fmt: skip
        if run is None:
            break
        result.runs.append(run)
        say(f"{what}: {_outcome(run)}")
    return results


def _outcome(run: Run) -> str:
    if run.error:
        return f"FAILED: {run.error}"
    return f"{run.wall_s:.2f} s, {run.mib_s:.1f} MiB/s, {run.files_s:.0f} files/s"


def ssh_target(location: SshLocation, options: DestinationOptions) -> SshTarget:
    """The OpenSSH tools' view of an SFTP destination and the SSH options given."""
    return SshTarget(
        host=location.host,
        user=location.user,
        port=location.port or options.port,
        key=options.identity_file,
        known_hosts=options.known_hosts,
        config=options.ssh_config,
        accept_new=options.accept_new_host_key,
    )


async def _compare(
    result: BenchResult,
    folder: BenchFolder,
    workload: Workload,
    scratch: Path,
    say: Say,
    cancel: threading.Event,
) -> None:
    """The other tools, alternated round by round with finalcopy's best setting."""
    plan = result.plan
    default = CopyOptions()
    fallback = Setting(default.jobs, default.chunk_size, default.algorithm, default.verify)
    reference = (result.best() or SettingResult(fallback)).setting
    result.reference = SettingResult(reference)
    chosen, skipped, _unknown = select_tools(_target(folder), plan.compare)
    result.tools = [ToolResult(t.key, t.label) for t in chosen]
    result.tools += [ToolResult(key, key, skipped=why) for key, why in skipped.items()]
    ssh = ssh_target(folder.remote, plan.dest_options) if folder.remote else None
    jobs: dict[str, Job] = {}
    for t in chosen:
        (scratch / t.key).mkdir()
        jobs[t.key] = Job(workload.path, folder.child(t.key), scratch / t.key, ssh)
        if t.prepare is not None:
            t.prepare(jobs[t.key])
    entrants: list[Tool | None] = [None, *chosen]  # None: finalcopy
    by_key = {r.key: r for r in result.tools}
    for round_ in range(plan.runs):
        for position, tool in enumerate(rotated(entrants, round_)):
            record = result.reference if tool is None else by_key[tool.key]
            if cancel.is_set() or record.error:
                continue
            name = tool.label if tool is not None else f"finalcopy ({reference.label})"
            what = f"compare {round_ + 1}/{plan.runs} · {name}"
            say(f"{what} …")
            at = (round_, position)
            if tool is None:
                options = plan.options_for(reference)
                run = await copy_once(folder, workload, options, "finalcopy", cancel, at)
            else:
                run = await tool_once(tool, jobs[tool.key], folder, workload, tool.key, cancel, at)
            if run is None:
                return
            record.runs.append(run)
            say(f"{what}: {_outcome(run)}")
