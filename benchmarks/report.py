"""The report: machine context, the tools' versions and commands, one table per workload.

The machine facts are :func:`finalcopy.bench.machine.machine_facts`, the ones
``finalcopy bench`` reports too.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from benchmarks.measure import MiB, Settings, WorkloadResult
from finalcopy.bench.machine import machine_facts as system_context

__all__ = ["json_report", "markdown_report", "system_context"]


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def markdown_report(
    context: dict[str, str],
    settings: Settings,
    tool_rows: list[dict[str, str]],
    workloads: list[WorkloadResult],
    reference_keys: list[str],
) -> str:
    """The report as markdown: context, tools, then one table per workload."""
    out = [f"## finalcopy benchmark, {context['date']}", ""]
    out += [
        f"- machine: {context['cpu']}, nproc {context['nproc']}, {context['memory']} RAM, "
        f"Linux {context['kernel']}, {context['python']}, load average {context['load']}",
        f"- target: {settings.target}; source: {settings.source_dir}; "
        f"destination: {settings.destination}",
        f"- {settings.runs} timed runs per tool (+{settings.warmup} warm-up), order rotated "
        f"each run; sync inside timing: {'yes' if settings.timed_sync else 'no'}; "
        f"content check: {'sha256' if settings.check_content else 'sizes only'}",
        "",
        "| tool | version | command | note |",
        "|---|---|---|---|",
    ]
    for row in tool_rows:
        out.append(f"| {row['label']} | {row['version']} | `{row['command']}` | {row['note']} |")
    for wl in workloads:
        out += [
            "",
            f"### {wl.name} (scale {wl.scale:g}): {wl.files} files, {wl.bytes / MiB:.1f} MiB",
            "",
        ]
        header = ["tool", "median s", "min s", "max s", "MiB/s", "CPU s", "peak RSS MiB"]
        header += [f"vs {key}" for key in reference_keys]
        out.append("| " + " | ".join(header) + " |")
        out.append("|---|" + "---:|" * (len(header) - 1))
        for res in wl.tools:
            if res.status != "ok":
                cells = [res.label, f"{res.status.upper()}: {res.error or ''}".replace("|", "\\|")]
                cells += [""] * (len(header) - 2)
            else:
                cells = [
                    res.label,
                    _fmt(res.median_s, 3),
                    _fmt(res.min_s, 3),
                    _fmt(res.max_s, 3),
                    _fmt(res.mib_s, 0),
                    _fmt(res.cpu_median_s, 2),
                    _fmt(res.rss_median_mib, 1),
                ]
                cells += [
                    f"{res.ratios[key]:.2f}×" if key in res.ratios else "" for key in reference_keys
                ]
            out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        "Ratios are the tool's median wall time divided by the reference's: "
        "below 1 is faster. CPU is the median user + system time of the tool's "
        "processes. Peak RSS is the largest single process of the tool's process "
        "tree (GNU time), not their sum. Server-side processes are counted in neither.",
    ]
    return "\n".join(out) + "\n"


def json_report(
    context: dict[str, str],
    settings: Settings,
    tool_rows: list[dict[str, str]],
    workloads: list[WorkloadResult],
) -> str:
    """The same data as the markdown report, with every single run (``--json``)."""
    payload = {
        "context": context,
        "settings": asdict(settings),
        "tools": tool_rows,
        "workloads": [asdict(w) for w in workloads],
    }
    return json.dumps(payload, indent=2) + "\n"
