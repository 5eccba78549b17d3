"""The closing lines people read: what was done, what failed, where everything is.

Programs read the same reports as JSON (``to_dict()``); these lines are the
human rendering of those reports and add nothing the reports do not hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from finalcopy.cli.render.base import human_bytes

if TYPE_CHECKING:
    from finalcopy.engine import CopyReport, VerifyReport
    from finalcopy.engine.bandwidth import BandwidthLimiter
    from finalcopy.finalize import FinalizationReport, Settings


def bwlimit_text(limiter: BandwidthLimiter) -> str:
    """``5.0 MiB/s``, or a timetable: ``5.0 MiB/s from 08:00, off from 19:00``."""
    schedule = limiter.schedule

    def rate(value: int | None) -> str:
        return "off" if value is None else f"{human_bytes(value)}/s"

    if not schedule.timetable:
        return rate(schedule.slots[0].rate)
    return ", ".join(f"{rate(slot.rate)} from {slot.label}" for slot in schedule.slots)


def bwlimit_header(limiter: BandwidthLimiter | None) -> str:
    """The line above the progress display naming the limit in force ("" without one)."""
    return "" if limiter is None else f"bandwidth limit: {bwlimit_text(limiter)}"


def _bwlimit(limiter: BandwidthLimiter | None) -> str:
    return "" if limiter is None else f", bwlimit={bwlimit_text(limiter)}"


def copy_summary(report: CopyReport, bwlimit: BandwidthLimiter | None = None) -> list[str]:
    """Counts, speed and manifest of a copy, then each failure and how to resume."""
    rate = human_bytes(report.bytes_copied / report.duration) + "/s" if report.duration else "-"
    verb = "would copy" if report.dry_run else "copied"
    # The report's own counts, as the JSON summary has them, whatever the ending.
    count = report.files - report.skipped if report.dry_run else report.copied
    lines = [
        f"{verb} {count} file(s) "
        f"({human_bytes(report.bytes_copied if not report.dry_run else report.bytes)}), "
        f"skipped {report.skipped} already verified, failed {len(report.failed)} "
        f"in {report.duration:.2f} s ({rate}); verify={report.verify}, hash={report.algorithm}"
        + _bwlimit(bwlimit)
    ]
    if report.manifest:
        lines.append(f"manifest: {report.manifest}")
    lines += [f"failed: {path}: {error}" for path, error in sorted(report.failed.items())]
    if report.interrupted:
        lines.append("interrupted: temporary files removed; re-run to complete the copy")
    return lines


def verify_summary(report: VerifyReport) -> list[str]:
    """OK or MISMATCH, then every difference by kind."""
    state = "OK" if report.ok else "MISMATCH"
    lines = [
        f"{state}: {report.checked} file(s), {human_bytes(report.bytes)} checked against "
        f"the {report.algorithm} manifest of {report.destination}"
    ]
    lines += [f"missing: {p}" for p in report.missing]
    lines += [f"changed: {p}" for p in report.changed]
    lines += [f"unexpected: {p}" for p in report.unexpected]
    lines += [f"leftover temporary file: {p}" for p in report.leftovers]
    lines += [f"error: {p}: {e}" for p, e in sorted(report.errors.items())]
    return lines


def finalize_summary(report: FinalizationReport, settings: Settings) -> list[str]:
    """What an operator needs at the end: outcome per project and where everything is."""
    lines: list[str] = []
    if report.destination_unusable:
        lines.append("No usable destination; nothing was touched:")
        lines += [f"  {note}" for note in report.destination_notes]
        if settings.no_fallback:
            lines.append("  (fallbacks forbidden by --no-fallback / FINALIZE_NO_FALLBACK)")
        return lines
    verb = "would finalize" if report.dry_run else "finalized"
    total = len(report.projects)
    count = total if report.dry_run else report.finalized
    lines.append(
        f"{verb} {count}/{total} project(s), failed {report.failed}, "
        f"in {report.duration:.2f} s; mode={report.mode}, on-existing={report.on_existing}"
        + _bwlimit(settings.copy.bwlimit)
    )
    for project in report.projects:
        size = human_bytes(project.bytes)
        shown = project.destination and project.status in ("finalized", "planned")
        where = f" → {project.destination}" if shown else ""
        why = f": {project.reason}" if project.reason and project.status != "finalized" else ""
        lines.append(f"  {project.status:<11} {project.name} ({size}){where}{why}")
    for name, reason in sorted(report.not_ready.items()):
        lines.append(f"  not ready   {name}: {reason}")
    lines.append(f"destination: {report.destination}")
    if report.fallback.used:
        lines.append(f"  WARNING: {report.fallback.message}")
    if not report.dry_run:
        lines.append(f"archives:    {report.archives_dir}")
        lines.append(f"log:         {report.log_file or '(none)'}")
        lines.append(f"status:      {settings.status_file}")
        if settings.report_path is not None:
            lines.append(f"report:      {settings.report_path}")
    if report.interrupted:
        lines.append("interrupted: unfinished projects keep their source; run again to resume")
    return lines
