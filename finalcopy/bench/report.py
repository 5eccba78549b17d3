"""What a benchmark says: a rich table with inline bars, the verdict, the SVG, the JSON.

The table is rich renderables only, so the same objects go to the terminal
and, through ``Console(record=True).save_svg``, to a picture for a README or
a ticket, with no plotting library. The JSON holds every run's raw figures,
the settings and the machine, as ``{"kind": "bench", ...}`` on one line
(the final-record convention of ``docs/json.md``).

The verdict names the best setting and, by a simple rule, what limits it:
the client's CPU near ``100 % × the cores its jobs can use`` means
CPU-bound; verification taking a large share of the work time means the
proof costs most; otherwise the destination (or the network) is the limit.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.bar import Bar
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from finalcopy.bench.matrix import Run, SettingResult
from finalcopy.bench.measure import Spread
from finalcopy.bench.runner import BenchResult

__all__ = ["print_report", "renderables", "to_json", "verdict", "write_svg"]

MiB = 1 << 20
#: Share of CPU (of the cores the jobs can use) from which a setting counts as CPU-bound.
CPU_BOUND = 0.85
#: Share of the worker time spent verifying from which verification is named the limit.
VERIFY_BOUND = 40.0
BAR_WIDTH = 14
#: Load average per core, before the benchmark starts, from which the machine counts as busy.
BUSY_LOAD = 0.5


def _cores(result: BenchResult) -> int:
    return int(result.machine.get("nproc", "1"))


def limit_of(result: BenchResult, best: SettingResult) -> tuple[str, str]:
    """(``cpu`` | ``verification`` | ``destination`` | ``network``, why) for ``best``."""
    cpu = best.cpu_percent() or 0.0
    usable = max(1, min(best.setting.jobs, _cores(result)))
    share = best.shares()["verify"]
    if cpu >= CPU_BOUND * 100 * usable:
        return "cpu", (
            f"it is CPU-bound: the client used {cpu:.0f} % CPU, about all that "
            f"{usable} core(s) give"
        )
    if share >= VERIFY_BOUND:
        return "verification", (
            f"verification takes {share:.0f} % of the work time "
            f"(--verify {best.setting.verify}): proving the copy costs most"
        )
    where = "network" if result.destination.get("kind") == "sftp" else "destination"
    return where, (
        f"the {'network or server' if where == 'network' else 'destination storage'} is the "
        f"limit: the client used only {cpu:.0f} % CPU and verification {share:.0f} % of the work"
    )


def verdict(result: BenchResult) -> str:
    """One sentence: the best setting and what limits it."""
    best = result.best()
    spread = best.mib_s() if best else None
    if best is None or spread is None:
        return "No setting completed a run, so there is no best one."
    _, why = limit_of(result, best)
    runs = len(best.good)
    return (
        f"Best: {best.setting.label} at {spread.median:.1f} MiB/s "
        f"(median of {runs} run{'s' if runs > 1 else ''}); {why}."
    )


def _range(spread: Spread | None, digits: int = 0) -> str:
    return "" if spread is None else f"{spread.low:.{digits}f}–{spread.high:.{digits}f}"


def _settings_table(result: BenchResult) -> Table:
    workload = result.workload
    title = f"finalcopy bench → {result.destination.get('dest', result.plan.dest)}"
    if workload is not None:
        title += f" ({workload.files} files, {workload.bytes / MiB:.0f} MiB)"
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("jobs · chunk · hash · verify", no_wrap=True)
    table.add_column("MiB/s", justify="right")
    table.add_column("", width=BAR_WIDTH)
    table.add_column("min–max", justify="right")
    table.add_column("files/s", justify="right")
    table.add_column("stream/commit/verify", justify="right")
    table.add_column("CPU", justify="right")
    table.add_column("peak RSS", justify="right")
    top = max((s.median for r in result.results if (s := r.mib_s())), default=0.0)
    best = result.best()
    for res in result.results:
        mib, files = res.mib_s(), res.files_s()
        label = Text(res.setting.cells, style="bold" if res is best else "")
        if mib is None:  # why: in the notes below, so the column stays narrow
            table.add_row(label, Text("FAILED" if res.error else "not run", style="red"))
            continue
        digits = 1 if mib.median < 100 else 0
        rss = res.peak_rss()
        table.add_row(
            label,
            f"{mib.median:.{digits}f}",
            Bar(top or 1.0, 0, mib.median, width=BAR_WIDTH, color="green"),
            _range(mib, digits),
            f"{files.median:.0f}" if files else "",
            " / ".join(f"{share:.0f}" for share in res.shares().values()) + " %",
            f"{res.cpu_percent() or 0:.0f} %",
            "" if rss is None else f"{rss / MiB:.0f} MiB",
        )
    return table


def _compare_table(result: BenchResult) -> Table | None:
    if result.reference is None:
        return None
    ref = result.reference.wall_s()
    table = Table(
        title="compared with other tools (ratio: tool time ÷ finalcopy time; above 1 is slower)",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    for name, justify in (("tool", "left"), ("median s", "right"), ("min–max s", "right"),
                          ("MiB/s", "right"), ("ratio", "right")):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    size = result.workload.bytes if result.workload else 0
    rows = [(f"finalcopy ({result.reference.setting.label})", ref)]
    rows += [(t.label, t.wall_s()) for t in result.tools if not t.skipped]
    for label, wall in rows:
        if wall is None:  # failed or interrupted: the notes say why
            table.add_row(label, Text("—", style="yellow"))
            continue
        ratio = f"{wall.median / ref.median:.2f}×" if ref and ref.median > 0 else ""
        table.add_row(label, f"{wall.median:.2f}", _range(wall, 2),
                      f"{size / MiB / wall.median:.1f}", ratio)  # fmt: skip
    return table


def _problems(result: BenchResult) -> list[str]:
    """What did not run or failed, one line each (kept out of the tables' columns)."""
    lines = [f"FAILED {r.setting.label}: {r.error}" for r in result.results if r.error]
    if result.reference is not None and result.reference.error:
        lines.append(f"FAILED finalcopy (compare): {result.reference.error}")
    for tool in result.tools:
        if tool.skipped:
            lines.append(f"{tool.label}: {tool.skipped}")
        elif tool.error:
            lines.append(f"FAILED {tool.label}: {tool.error}")
    return lines


def busy_warning(result: BenchResult) -> str | None:
    """A caution when other processes kept the CPUs busy as the benchmark started."""
    load = float(result.machine.get("load", "0").split()[0])
    if load < BUSY_LOAD * _cores(result):
        return None
    return (
        f"The machine was busy before the benchmark started (load average {load:.1f} on "
        f"{_cores(result)} core(s)): other processes took CPU time, so the spread is wide "
        "and a CPU limit may look like the destination's; add --runs or measure when it is quiet."
    )


def renderables(result: BenchResult) -> list[RenderableType]:
    """The tables, the verdict and the notes, in the order they are shown."""
    out: list[RenderableType] = [_settings_table(result)]
    if (compare := _compare_table(result)) is not None:
        out.append(compare)
    if problems := _problems(result):
        out.append(Text("\n".join(problems), style="yellow"))
    out.append(Text(verdict(result), style="bold"))
    if (busy := busy_warning(result)) is not None:
        out.append(Text(busy, style="yellow"))
    rss_note = (
        "peak RSS is each run's own peak (reset before each run)"
        if _rss_scope(result) == "run"
        else "peak RSS is the process's high-water mark so far (it could not be reset)"
    )
    notes = [
        f"MiB/s and files/s: median over {result.plan.runs} run(s), bold: the best; "
        "stream/commit/verify: shares of the workers' time; CPU: client process CPU time "
        f"÷ wall time ({_cores(result)} core(s) = {100 * _cores(result)} %); {rss_note}.",
    ]
    if result.workload is not None:
        notes.append(f"Source: {result.workload.where}.")
    m = result.machine
    notes.append(
        f"{m['date'][:10]}, {m['cpu']}, {m['nproc']} core(s), Linux {m['kernel']}, "
        f"{m['python']}, finalcopy {m['finalcopy']}, load average {m['load']}."
    )
    out.append(Text("\n".join(notes), style="dim"))
    return out


def _rss_scope(result: BenchResult) -> str:
    """``run`` when every engine run measured its own peak, else ``process``."""
    runs = [r for res in result.results for r in res.runs]
    return "run" if all(r.rss_scope == "run" for r in runs) else "process"


def print_report(console: Console, result: BenchResult) -> None:
    for item in renderables(result):
        console.print(item)


def write_svg(result: BenchResult, path: Path, width: int = 120) -> None:
    """The report as an SVG picture (rich's own export, no plotting library)."""
    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=True)
    print_report(console, result)
    console.save_svg(str(path), title="finalcopy bench")


def _spread(spread: Spread | None, digits: int = 3) -> dict[str, float] | None:
    if spread is None:
        return None
    return {k: round(getattr(spread, k), digits) for k in ("median", "low", "high")}


def _runs(runs: Sequence[Run]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in runs]


def to_json(result: BenchResult) -> dict[str, Any]:
    """Every run's raw figures, the settings and the machine facts.

    No ``time``: :class:`~finalcopy.cli.render.engine.JsonRenderer` stamps the
    line when it writes it, as it does every other command's.
    """
    plan, best, workload = result.plan, result.best(), result.workload
    limit = limit_of(result, best)[0] if best is not None and best.mib_s() else None
    return {
        "kind": "bench",
        "ok": not result.interrupted and all(not r.error for r in result.results),
        "interrupted": result.interrupted,
        "machine": result.machine,
        "destination": result.destination,
        "workload": None if workload is None else {
            "source": str(workload.path) if not workload.generated else None,
            "generated": workload.generated,
            "where": workload.where,
            "files": workload.files,
            "bytes": workload.bytes,
            "size_asked": plan.size if workload.generated else None,
            "small_files": plan.small_files if workload.generated else None,
            "seed": plan.seed,
            "generate_s": round(workload.generate_s, 3),
        },
        "runs_per_setting": plan.runs,
        "rss_scope": _rss_scope(result),
        "settings": [
            {
                **res.setting.to_dict(),
                "label": res.setting.label,
                "error": res.error,
                "mib_s": _spread(res.mib_s(), 2),
                "files_s": _spread(res.files_s(), 1),
                "wall_s": _spread(res.wall_s()),
                "phase_shares_percent": {k: round(v, 1) for k, v in res.shares().items()},
                "cpu_percent": res.cpu_percent(),
                "peak_rss_bytes": res.peak_rss(),
                "runs": _runs(res.runs),
            }
            for res in result.results
        ],
        "best": best.setting.label if best else None,
        "limit": limit,
        "verdict": verdict(result),
        "compare": None if result.reference is None else {
            "finalcopy": {"setting": result.reference.setting.to_dict(),
                          "runs": _runs(result.reference.runs)},
            "tools": [
                {"key": t.key, "label": t.label, "skipped": t.skipped, "error": t.error,
                 "wall_s": _spread(t.wall_s()), "runs": _runs(t.runs),
                 "ratio": _ratio(t.wall_s(), result.reference.wall_s())}
                for t in result.tools
            ],
        },
    }  # fmt: skip


def _ratio(tool: Spread | None, ref: Spread | None) -> float | None:
    if tool is None or ref is None or ref.median <= 0:
        return None
    return round(tool.median / ref.median, 3)
