"""Measuring: time each tool's command, check its copy, rotate the order, summarize.

Each run: remove the previous destination, ``sync``, then time the tool's
command with :func:`finalcopy.bench.measure.run_command` (wall time around
the subprocess, CPU time from ``wait4``, peak RSS from GNU time's ``%M``: the
code ``finalcopy bench --compare`` uses), and check that every source file
landed with its size (optionally its SHA-256). A wrong copy is a failure, not
a time. The order rotates as in ``finalcopy bench``
(:func:`finalcopy.bench.matrix.rotated`).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.targets import REPO_ROOT, Destination, local_digests, local_listing
from benchmarks.tools import Job, Tool
from finalcopy.bench.matrix import rotated
from finalcopy.bench.measure import Spread, run_command
from finalcopy.bench.workload import generate

__all__ = [
    "RunRecord",
    "Settings",
    "ToolResult",
    "WorkloadResult",
    "bench_workload",
    "check_copy",
    "log",
    "rotated",
]

MiB = 1 << 20


@dataclass
class RunRecord:
    """One timed execution of one tool."""

    run: int
    position: int
    wall_s: float
    max_rss_kib: int | None
    ok: bool
    error: str | None = None
    cpu_s: float | None = None
    """User + system time of the tool's processes (not a server's)."""


@dataclass
class ToolResult:
    """All runs of one tool on one workload, and their summary."""

    key: str
    label: str
    status: str = "ok"  # ok | failed | skipped
    error: str | None = None
    runs: list[RunRecord] = field(default_factory=list)
    median_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    mib_s: float | None = None
    rss_median_mib: float | None = None
    cpu_median_s: float | None = None
    #: Median wall time divided by each reference tool's median (< 1: faster),
    #: by the reference's key.
    ratios: dict[str, float] = field(default_factory=dict)

    def summarize(self, total_bytes: int) -> None:
        """Fill the statistics from the successful runs."""
        walls = Spread.of([r.wall_s for r in self.runs if r.ok])
        if self.status != "ok" or walls is None:
            return
        self.median_s, self.min_s, self.max_s = walls
        self.mib_s = total_bytes / MiB / self.median_s if self.median_s > 0 else None
        rss = [r.max_rss_kib for r in self.runs if r.ok and r.max_rss_kib is not None]
        self.rss_median_mib = statistics.median(rss) / 1024 if rss else None
        cpu = [r.cpu_s for r in self.runs if r.ok and r.cpu_s is not None]
        self.cpu_median_s = statistics.median(cpu) if cpu else None


@dataclass
class WorkloadResult:
    """One workload: its tree and every tool's result."""

    name: str
    scale: float
    files: int
    bytes: int
    generate_s: float
    tools: list[ToolResult]


def check_copy(
    source: dict[str, int],
    copied: dict[str, int],
    src_name: str,
    source_digests: dict[str, str] | None,
    dest_digests: Callable[[], dict[str, str]],
) -> str | None:
    """None when every source file landed with its size (and digest); else why not.

    Tools disagree on whether ``SRC DST`` lands in ``DST`` or ``DST/SRC``;
    both are accepted. Extra files (a manifest, say) are allowed.
    """
    best_prefix, best_hits = "", -1
    for prefix in ("", src_name + "/"):
        hits = sum(1 for rel in source if prefix + rel in copied)
        if hits > best_hits:
            best_prefix, best_hits = prefix, hits
    missing = [rel for rel in source if best_prefix + rel not in copied]
    if missing:
        return f"incomplete copy: {len(missing)} of {len(source)} files missing (e.g. {missing[0]})"
    wrong = [rel for rel, size in source.items() if copied[best_prefix + rel] != size]
    if wrong:
        rel = wrong[0]
        return (
            f"wrong copy: {len(wrong)} file(s) differ in size "
            f"(e.g. {rel}: {copied[best_prefix + rel]} != {source[rel]})"
        )
    if source_digests is not None:
        digests = dest_digests()
        bad = [rel for rel, d in source_digests.items() if digests.get(best_prefix + rel) != d]
        if bad:
            return f"wrong copy: {len(bad)} file(s) differ in content (e.g. {bad[0]})"
    return None


@dataclass
class Settings:
    """The options that shape a benchmark, as recorded in the report."""

    target: str
    workloads: list[str]
    runs: int
    warmup: int
    scale: float
    seed: int
    timeout: float
    timed_sync: bool
    check_content: bool
    source_dir: str
    destination: str
    tools: list[str]


def log(message: str) -> None:
    """Progress goes to stderr so stdout is exactly the report."""
    print(message, file=sys.stderr, flush=True)


def bench_workload(
    name: str,
    settings: Settings,
    tools: Sequence[Tool],
    skipped: dict[str, str],
    dest: Destination,
    scratch: Path,
    make_job: Callable[[Path, Path], Job],
) -> WorkloadResult:
    """Generate one workload, time every tool that applies to it, and summarize."""
    labels = {t.key: t.label for t in tools}
    skipped = {**skipped}
    for tool in tools:
        if tool.workloads is not None and name not in tool.workloads:
            skipped[tool.key] = f"does not apply to {name}"
    tools = [t for t in tools if t.key not in skipped]
    src_parent = scratch / "src"
    started = time.perf_counter()
    src = generate(name, src_parent, settings.scale, settings.seed)
    generate_s = time.perf_counter() - started
    source = local_listing(src)
    total = sum(source.values())
    log(f"[{name}] generated {len(source)} files, {total / MiB:.1f} MiB in {generate_s:.1f} s")
    source_digests = local_digests(src) if settings.check_content else None

    results = {t.key: ToolResult(t.key, t.label) for t in tools}
    for key, reason in skipped.items():
        results[key] = ToolResult(key, labels.get(key, key), status="skipped", error=reason)
    jobs: dict[str, Job] = {}
    for tool in tools:
        tool_scratch = scratch / "tools" / tool.key
        tool_scratch.mkdir(parents=True, exist_ok=True)
        jobs[tool.key] = make_job(src, tool_scratch)
        if tool.prepare is not None:
            tool.prepare(jobs[tool.key])

    def attempt(tool: Tool, run: int, position: int) -> RunRecord:
        job = jobs[tool.key]
        dest.clear()
        os.sync()
        env = {**os.environ, "LC_ALL": "C.UTF-8", **(tool.env(job) if tool.env else {})}
        if tool.before_each is not None:
            tool.before_each(job)
        outcome = run_command(
            tool.argv(job), env=env, cwd=REPO_ROOT, stdout=job.scratch / "stdout",
            stderr=job.scratch / "stderr", timeout=settings.timeout,
            sync=Path(dest.path) if settings.timed_sync else None,
        )  # fmt: skip
        error = outcome.error
        if error is None:
            error = check_copy(source, dest.listing(), src.name, source_digests, dest.digests)
        return RunRecord(
            run, position, outcome.wall_s, outcome.max_rss_kib, error is None, error, outcome.cpu_s
        )

    active = list(tools)
    for run in range(-settings.warmup, settings.runs):
        for position, tool in enumerate(rotated(active, run)):
            record = attempt(tool, run, position)
            kind = "warm-up" if run < 0 else f"run {run + 1}/{settings.runs}"
            status = f"{record.wall_s:.2f} s" if record.ok else f"FAILED: {record.error}"
            log(f"[{name}] {kind} {tool.label}: {status}")
            if record.ok and run < 0:
                continue
            results[tool.key].runs.append(record)
            if not record.ok:
                results[tool.key].status = "failed"
                results[tool.key].error = record.error
                active.remove(tool)
    dest.clear()
    shutil.rmtree(src_parent)

    ordered = list(results.values())  # the tools that ran, then the skipped ones
    for result in ordered:
        result.summarize(total)
    references = [results[t.key] for t in tools if t.reference]
    for result in ordered:
        for ref in references:
            if result.median_s is not None and ref.median_s:
                result.ratios[ref.key] = result.median_s / ref.median_s
    return WorkloadResult(name, settings.scale, len(source), total, generate_s, ordered)
