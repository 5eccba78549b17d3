"""The pipeline step ``finalcopy run``: archive, copy, verify ready projects, delete their source.

One entry point, :func:`run_finalization` (or :func:`finalize_sync`)::

    from finalcopy.finalize import Settings, finalize_sync

    report = finalize_sync(Settings.resolve({"work_dir": Path("projets_extraits")}))
    print(report.exit_code, [(p.name, p.status) for p in report.projects])

``docs/run.md`` documents the settings, the folders, the report and the status file.
"""

from finalcopy.finalize.finalization import finalize_sync, run_finalization
from finalcopy.finalize.report import FinalizationReport, ProjectResult
from finalcopy.finalize.settings import Settings

RunReport = FinalizationReport
"""The report's earlier name, kept for callers of the documented API (``finalcopy.RunReport``)."""

__all__ = [
    "FinalizationReport",
    "ProjectResult",
    "RunReport",
    "Settings",
    "finalize_sync",
    "run_finalization",
]
