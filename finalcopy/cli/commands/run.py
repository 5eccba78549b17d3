"""``finalcopy run [WORK_DIR]``: the pipeline's finalization step.

The pipeline's own options (:class:`PipelineOptions`) bind to its environment
variables (shown in ``--help``); only values typed on the command line are
passed on, so that :meth:`~finalcopy.finalize.settings.Settings.resolve` alone
decides precedence: options, then environment, then defaults.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from finalcopy.choices import Mode, OnExisting
from finalcopy.cli.destination import check_destination
from finalcopy.cli.options import (
    DESTINATION,
    OUTPUT,
    WHAT,
    Checksum,
    FilesystemOptions,
    Jobs,
    OptionBlock,
    OutputOptions,
    SshOptions,
    TransferOptions,
    dry_run_option,
    with_option_blocks,
)
from finalcopy.cli.runtime import fail, run_cancellable
from finalcopy.errors import EXIT_USAGE

if TYPE_CHECKING:
    from finalcopy.finalize import FinalizationReport


@dataclass(frozen=True)
class PipelineOptions(OptionBlock):
    """The settings of ``run`` that mirror the pipeline's environment variables."""

    output_dir: Annotated[
        str | None,
        typer.Option(
            "--output-dir",
            rich_help_panel=DESTINATION,
            envvar="OUTPUT_DIR",
            help="Destination (path, sftp:// URL or user@host:path); overrides CACHE_ROOT_DIR.",
        ),
    ] = None
    cache_root_dir: Annotated[
        str,
        typer.Option(
            "--cache-root-dir",
            rich_help_panel=DESTINATION,
            envvar="CACHE_ROOT_DIR",
            help="Final storage root, used when no OUTPUT_DIR is given. Must exist.",
        ),
    ] = "/mnt/cache"
    fallback_output_dir: Annotated[
        Path | None,
        typer.Option(
            "--fallback-output-dir",
            rich_help_panel=DESTINATION,
            envvar="FALLBACK_OUTPUT_DIR",
            help="Used when the output is not writable (must exist); then BASE/_finalized_output.",
        ),
    ] = None
    no_fallback: Annotated[
        bool,
        typer.Option(
            "--no-fallback/--fallback",
            rich_help_panel=DESTINATION,
            envvar="FINALIZE_NO_FALLBACK",
            help="An unusable output is an error (exit 3, nothing touched) instead of a "
            "fallback to FALLBACK_OUTPUT_DIR or BASE/_finalized_output. A fallback, when "
            "allowed, is a WARNING in the log, on the console, in the report and status file.",
        ),
    ] = False
    archives_dir: Annotated[
        Path | None,
        typer.Option(
            "--archives-dir",
            rich_help_panel=DESTINATION,
            envvar="ARCHIVES_DIR",
            help="Where analysis artifacts are archived, never deleted (default: BASE/archives).",
        ),
    ] = None
    mode: Annotated[
        Mode,
        typer.Option(
            "--mode",
            rich_help_panel=WHAT,
            case_sensitive=False,
            envvar="FINALIZE_MODE",
            help="Readiness: strict (scenes+tracking), lenient (any artifact), videos (any video).",
        ),
    ] = "lenient"
    restore_archives: Annotated[
        bool,
        typer.Option(
            "--restore-archives/--no-restore-archives",
            rich_help_panel=WHAT,
            envvar="RESTORE_ARCHIVES_TO_OUTPUT",
            help="Copy archived artifacts the project lacks into its output folder.",
        ),
    ] = False
    log_dir: Annotated[
        Path | None,
        typer.Option(
            "--log-dir",
            rich_help_panel=OUTPUT,
            envvar="LOG_DIR",
            help="Log folder (default: BASE/logs/step7).",
        ),
    ] = None
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", rich_help_panel=OUTPUT, envvar="DEBUG", help="Debug-level log file."
        ),
    ] = False
    base_dir: Annotated[
        Path | None,
        typer.Option(
            "--base-dir",
            rich_help_panel=DESTINATION,
            envvar="FINALCOPY_BASE_DIR",
            help="Pipeline root holding _finalized_output/, logs/, archives/ "
            "(default: parent of the work directory).",
        ),
    ] = None
    on_existing: Annotated[
        OnExisting,
        typer.Option(
            "--on-existing",
            rich_help_panel=WHAT,
            case_sensitive=False,
            envvar="FINALCOPY_ON_EXISTING",
            help="When OUTPUT/<project> exists: merge (files replaced atomically, others kept), "
            "replace (swap once the new copy is verified), rename (new <name>__finalized_<time>).",
        ),
    ] = "merge"

    def given(self, ctx: typer.Context) -> dict[str, Any]:
        """The values typed on the command line (not taken from the environment or defaults)."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            # By name: typer vendors click, so the enum's class is not importable reliably.
            if getattr(ctx.get_parameter_source(field.name), "name", None) == "COMMANDLINE"
        }


@with_option_blocks
def run_command(
    ctx: typer.Context,
    work_dir: Annotated[
        Path | None,
        typer.Argument(help="The work directory (projets_extraits/); default: current directory."),
    ] = None,
    *,
    pipeline: PipelineOptions,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report", rich_help_panel=OUTPUT, help="Also write the final JSON report here."
        ),
    ] = None,
    dry_run: Annotated[
        bool, dry_run_option("List what would be finalized and why; touch nothing.")
    ] = False,
    transfer: TransferOptions,
    jobs: Jobs = 4,
    checksum: Checksum = False,
    output: OutputOptions,
    filesystem: FilesystemOptions,
    ssh: SshOptions,
) -> None:
    """Finalize every ready project of the work directory: archive its analysis, copy it,
    verify it byte for byte, then delete its source.

    Exit codes: 0 every ready project finalized (or nothing to do), 1 some failed,
    2 usage error, 3 no usable destination (or, with --no-fallback, an unusable output),
    130 interrupted. See docs/run.md.
    """
    options = pipeline.given(ctx)
    if options.get("output_dir"):
        check_destination(options["output_dir"], "--output-dir")
    copy = transfer.copy_options(jobs, checksum=checksum)
    options.update(
        work_dir=work_dir,
        dry_run=dry_run,
        verbose=output.verbose > 0,
        report_path=report,
        # The command's one limiter (from --bwlimit, else FINALCOPY_BWLIMIT as typer read
        # it), which the settings keep as given; "off", not None, when there is none, so
        # the settings do not read FINALCOPY_BWLIMIT again over a typed `--bwlimit off`.
        bwlimit=copy.bwlimit or "off",
        copy=copy,
        destination=ssh.destination_options(jobs, filesystem),
    )
    raise typer.Exit(finalize(options, output))


def finalize(options: dict[str, Any], output: OutputOptions) -> int:
    """Resolve the settings, finalize with a renderer, and return the exit code."""
    # Imported here, not at the top: `finalcopy --help` needs none of them.
    from finalcopy.cli.render.base import header
    from finalcopy.cli.render.finalize import finalize_renderer
    from finalcopy.cli.render.summary import bwlimit_header, finalize_summary
    from finalcopy.errors import UsageError
    from finalcopy.finalize import Settings, run_finalization

    try:
        settings = Settings.resolve(options)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    renderer = finalize_renderer(
        output.json_output,
        output.verbose > 0,
        quiet=output.quiet,
        live=output.progress,
        interval=output.stats,
    )

    async def work(cancel: threading.Event) -> FinalizationReport:
        header(bwlimit_header(settings.copy.bwlimit), output.json_output, output.quiet)
        with renderer:
            result = await run_finalization(settings, events=renderer, cancel=cancel)
            with contextlib.suppress(BrokenPipeError):  # the reader left; the report is on disk
                renderer.summary(result.to_dict(), finalize_summary(result, settings))
        return result

    return run_cancellable(work).exit_code
