"""``finalcopy run`` (the pipeline's finalization step) and ``finalcopy demo``.

Options bind to the pipeline's environment variables (shown in ``--help``);
only values typed on the command line are passed on as options, so that
:meth:`~finalcopy.finalize.settings.Settings.resolve` alone decides
precedence: options, then environment, then defaults.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from finalcopy.cli.app import (
    EXIT_USAGE,
    AcceptNewOpt,
    IdentityOpt,
    JobsOpt,
    JsonOpt,
    KnownHostsOpt,
    MetadataOpt,
    NamesOpt,
    PortOpt,
    RetriesOpt,
    SshConfigOpt,
    TimeoutOpt,
    VerboseOpt,
    app,
    destination_options,
    fail,
    parse_size,
    run_cancellable,
)
from finalcopy.cli.render import JsonRenderer, PlainRenderer, human_bytes
from finalcopy.engine import BytesProgress, CopyOptions, Event, Notice
from finalcopy.errors import UsageError
from finalcopy.finalize import RunReport, Settings, run_finalization
from finalcopy.finalize.demo import generate_demo
from finalcopy.finalize.events import (
    FolderNotReady,
    ProjectDone,
    ProjectEvent,
    ProjectFailed,
    ProjectSkipped,
    ProjectStarted,
    RunPlanned,
)
from finalcopy.finalize.logs import CONSOLE_IN_PROGRESS, COUNT, PROJECT_DONE
from finalcopy.finalize.settings import verify_mode

# -- renderers -------------------------------------------------------------------------


class PlainPipelineRenderer:
    """The original's console lines, failures, and engine progress as plain lines."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.engine = PlainRenderer(verbose=verbose)

    def __enter__(self) -> PlainPipelineRenderer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        sys.stdout.flush()

    def line(self, text: str) -> None:
        self.engine.line(text)

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunPlanned):
            self.line(COUNT.format(n=len(event.projects)))
        elif isinstance(event, ProjectStarted):
            self.line(CONSOLE_IN_PROGRESS.format(p=event.project))
        elif isinstance(event, ProjectDone):
            self.line(PROJECT_DONE.format(p=event.project))
        elif isinstance(event, ProjectFailed):
            self.line(f"FAILED '{event.project}': {event.reason}")
        elif isinstance(event, ProjectSkipped):
            self.line(f"skipped '{event.project}': {event.reason}")
        elif isinstance(event, FolderNotReady):
            if self.verbose:
                self.line(f"not ready: '{event.project}': {event.reason}")
        elif isinstance(event, ProjectEvent) and event.event is not None:
            self._engine(event.phase, event.event)
        elif isinstance(event, Notice):
            run_warning(event, self.verbose)

    def _engine(self, phase: str, event: Event) -> None:
        # Archive and restore copies are small: only their failures and warnings show.
        if phase == "copy" or event.kind in ("file_failed", "notice", "retry"):
            self.engine(event)

    def summary(self, report: RunReport, lines: list[str]) -> None:
        for text in lines:
            self.line(text)


class RichPipelineRenderer:
    """One bar for the whole run, one for the project being finalized."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}", justify="left"),
            BarColumn(bar_width=None),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.overall: TaskID | None = None
        self.project: TaskID | None = None
        self.before = 0

    def __enter__(self) -> RichPipelineRenderer:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def print(self, text: str) -> None:
        self.progress.console.print(text, highlight=False)

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunPlanned):
            self.print(COUNT.format(n=len(event.projects)))
            if not event.dry_run:
                self.overall = self.progress.add_task("total", total=event.bytes)
        elif isinstance(event, ProjectStarted):
            self.print(CONSOLE_IN_PROGRESS.format(p=event.project))
            self.project = self.progress.add_task(event.project, total=event.bytes)
        elif isinstance(event, ProjectDone | ProjectFailed | ProjectSkipped):
            if isinstance(event, ProjectDone):
                self.print(PROJECT_DONE.format(p=event.project))
            elif isinstance(event, ProjectFailed):
                self.print(f"[red]FAILED[/red] '{event.project}': {event.reason}")
            else:
                self.print(f"[yellow]skipped[/yellow] '{event.project}': {event.reason}")
            if self.project is not None:
                self.before += int(self.progress.tasks[self._index(self.project)].total or 0)
                self.progress.remove_task(self.project)
                self.project = None
            if self.overall is not None:
                self.progress.update(self.overall, completed=self.before)
        elif isinstance(event, FolderNotReady):
            if self.verbose:
                self.print(f"[dim]not ready: '{event.project}': {event.reason}[/dim]")
        elif isinstance(event, Notice):
            if event.level == "warning" and not self.verbose:
                self.progress.console.print(
                    f"[bold yellow]WARNING:[/bold yellow] {escape(event.message)}", highlight=False
                )
        elif isinstance(event, ProjectEvent) and event.phase == "copy":
            inner = event.event
            if isinstance(inner, BytesProgress) and self.project is not None:
                self.progress.update(self.project, completed=inner.done, total=inner.total)
                if self.overall is not None:
                    self.progress.update(self.overall, completed=self.before + inner.done)
            elif inner is not None and inner.kind == "file_failed":
                data = inner.to_dict()
                self.print(f"[red]FAILED[/red] {event.project}/{data['path']}: {data['error']}")

    def _index(self, task: TaskID) -> int:
        return next(i for i, t in enumerate(self.progress.tasks) if t.id == task)

    def summary(self, report: RunReport, lines: list[str]) -> None:
        for text in lines:
            self.print(text)


class JsonPipelineRenderer:
    """JSON lines: engine events tagged with ``project`` and ``phase``, project events, report."""

    def __init__(self, verbose: bool = False) -> None:
        self.json = JsonRenderer()
        self.verbose = verbose

    def __enter__(self) -> JsonPipelineRenderer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def __call__(self, event: Event) -> None:
        inner = event.event if isinstance(event, ProjectEvent) else None
        if isinstance(inner, BytesProgress) and self.json.throttled(inner):
            return
        self.json.emit(event.to_dict())
        if isinstance(event, Notice):
            run_warning(event, self.verbose)  # stdout is for programs; people read stderr

    def summary(self, report: RunReport, lines: list[str]) -> None:
        self.json.emit(report.to_dict())  # kind: finalize_report


PipelineRenderer = PlainPipelineRenderer | RichPipelineRenderer | JsonPipelineRenderer


def run_warning(event: Notice, verbose: bool) -> None:
    """A run-level warning (the fallback) on stderr; with ``-v`` the echoed log shows it."""
    if event.level == "warning" and not verbose:
        with contextlib.suppress(OSError):
            print(f"WARNING: {event.message}", file=sys.stderr, flush=True)


def make_pipeline_renderer(json_output: bool, verbose: bool) -> PipelineRenderer:
    if json_output:
        return JsonPipelineRenderer(verbose)
    if sys.stderr.isatty():
        return RichPipelineRenderer(verbose)
    return PlainPipelineRenderer(verbose)


def summary_lines(report: RunReport, settings: Settings) -> list[str]:
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


# -- commands ---------------------------------------------------------------------------


def _given(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The values typed on the command line (not taken from the environment or defaults)."""
    return {
        name: value
        for name, value in values.items()
        # By name: typer vendors click, so the enum's class is not importable reliably.
        if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"
    }


@app.command("run")
def run_command(
    ctx: typer.Context,
    work_dir: Annotated[
        Path | None,
        typer.Argument(help="The work directory (projets_extraits/); default: current directory."),
    ] = None,
    output_dir: Annotated[
        str | None,
        typer.Option(
            "--output-dir",
            envvar="OUTPUT_DIR",
            help="Destination (path, sftp:// URL or user@host:path); overrides CACHE_ROOT_DIR.",
        ),
    ] = None,
    cache_root_dir: Annotated[
        str,
        typer.Option(
            "--cache-root-dir",
            envvar="CACHE_ROOT_DIR",
            help="Final storage root, used when no OUTPUT_DIR is given. Must exist.",
        ),
    ] = "/mnt/cache",
    fallback_output_dir: Annotated[
        Path | None,
        typer.Option(
            "--fallback-output-dir",
            envvar="FALLBACK_OUTPUT_DIR",
            help="Used when the output is not writable (must exist); then BASE/_finalized_output.",
        ),
    ] = None,
    no_fallback: Annotated[
        bool,
        typer.Option(
            "--no-fallback/--fallback",
            envvar="FINALIZE_NO_FALLBACK",
            help="An unusable output is an error (exit 3, nothing touched) instead of a "
            "fallback to FALLBACK_OUTPUT_DIR or BASE/_finalized_output. A fallback, when "
            "allowed, is a WARNING in the log, on the console, in the report and status file.",
        ),
    ] = False,
    archives_dir: Annotated[
        Path | None,
        typer.Option(
            "--archives-dir",
            envvar="ARCHIVES_DIR",
            help="Where analysis artifacts are archived, never deleted (default: BASE/archives).",
        ),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            envvar="FINALIZE_MODE",
            help="Readiness: strict (scenes+tracking), lenient (any artifact), videos (any video).",
        ),
    ] = "lenient",
    restore_archives: Annotated[
        bool,
        typer.Option(
            "--restore-archives/--no-restore-archives",
            envvar="RESTORE_ARCHIVES_TO_OUTPUT",
            help="Copy archived artifacts the project lacks into its output folder.",
        ),
    ] = False,
    log_dir: Annotated[
        Path | None,
        typer.Option("--log-dir", envvar="LOG_DIR", help="Log folder (default: BASE/logs/step7)."),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug/--no-debug", envvar="DEBUG", help="Debug-level log file.")
    ] = False,
    base_dir: Annotated[
        Path | None,
        typer.Option(
            "--base-dir",
            envvar="FINALCOPY_BASE_DIR",
            help="Pipeline root holding _finalized_output/, logs/, archives/ "
            "(default: parent of the work directory).",
        ),
    ] = None,
    on_existing: Annotated[
        str,
        typer.Option(
            "--on-existing",
            envvar="FINALCOPY_ON_EXISTING",
            help="When OUTPUT/<project> exists: merge (files replaced atomically, others kept), "
            "replace (swap once the new copy is verified), rename (new <name>__finalized_<time>).",
        ),
    ] = "merge",
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write the final JSON report here.")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", "-n", help="List what would be finalized and why; touch nothing."
        ),
    ] = False,
    hash_name: Annotated[
        str, typer.Option("--hash", help="blake3 (default), sha256 or xxh128.")
    ] = "blake3",
    chunk_size: Annotated[str, typer.Option("--chunk-size", help="Bytes per read/write.")] = "64K",
    jobs: JobsOpt = 4,
    verify: Annotated[
        str, typer.Option("--verify", help="readback (default), size or none.")
    ] = "readback",
    json_output: JsonOpt = False,
    verbose: VerboseOpt = 0,
    metadata: MetadataOpt = "auto",
    ntfs_names: NamesOpt = "reject",
    identity: IdentityOpt = None,
    ssh_config: SshConfigOpt = None,
    port: PortOpt = None,
    known_hosts: KnownHostsOpt = None,
    accept_new_host_key: AcceptNewOpt = False,
    retries: RetriesOpt = 3,
    timeout: TimeoutOpt = 300.0,
) -> None:
    """Finalize every ready project of the work directory: archive its analysis, copy it,
    verify it byte for byte, then delete its source.

    Exit codes: 0 every ready project finalized (or nothing to do), 1 some failed,
    2 usage error, 3 no usable destination (or, with --no-fallback, an unusable output),
    130 interrupted. See docs/run.md.
    """
    copy_options = CopyOptions(
        algorithm=hash_name,
        chunk_size=parse_size(chunk_size),
        jobs=jobs,
        verify=_verify(verify),
    )
    options = _given(
        ctx,
        {
            "output_dir": output_dir,
            "cache_root_dir": cache_root_dir,
            "fallback_output_dir": fallback_output_dir,
            "no_fallback": no_fallback,
            "archives_dir": archives_dir,
            "mode": mode,
            "restore_archives": restore_archives,
            "log_dir": log_dir,
            "debug": debug,
            "base_dir": base_dir,
            "on_existing": on_existing,
        },
    )
    options.update(
        work_dir=work_dir,
        dry_run=dry_run,
        verbose=verbose > 0,
        report_path=report,
        copy=copy_options,
        destination=destination_options(
            metadata,
            ntfs_names,
            identity,
            port,
            known_hosts,
            accept_new_host_key,
            retries,
            timeout,
            jobs,
            ssh_config,
        ),
    )
    raise typer.Exit(_run(options, json_output, verbose > 0))


def _verify(name: str) -> Any:
    try:
        return verify_mode(name)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)


def _run(options: dict[str, Any], json_output: bool, verbose: bool) -> int:
    try:
        settings = Settings.resolve(options)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    renderer = make_pipeline_renderer(json_output, verbose)

    async def work(cancel: threading.Event) -> RunReport:
        with renderer:
            result = await run_finalization(settings, events=renderer, cancel=cancel)
            with contextlib.suppress(BrokenPipeError):  # the reader left; the report is on disk
                renderer.summary(result, summary_lines(result, settings))
        return result

    return run_cancellable(work).exit_code


@app.command("demo")
def demo_command(
    directory: Annotated[
        Path, typer.Argument(help="Where to create projets_extraits/ (and, after a run, the rest).")
    ] = Path("demo"),
    run: Annotated[
        bool, typer.Option("--run", help="Then finalize it with `finalcopy run`'s defaults.")
    ] = False,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Create a sample projets_extraits/ with ready, not-ready and corrupt projects.

    Then: cd DIRECTORY/projets_extraits && finalcopy run (or use --run). With the
    defaults, /mnt/cache is used if it exists and is writable, else the copy lands
    in DIRECTORY/_finalized_output/; logs go to DIRECTORY/logs/step7/ and
    archives to DIRECTORY/archives/.
    """
    try:
        work = generate_demo(directory)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    out = sys.stderr if json_output else sys.stdout
    print(f"sample work directory: {work.resolve()}", file=out)
    if not run:
        print(f"next: cd {work} && finalcopy run", file=out)
        raise typer.Exit(0)
    code = _run(
        {"work_dir": work, "verbose": verbose > 0, "copy": CopyOptions()}, json_output, verbose > 0
    )
    if code == 1:
        print(
            "exit 1 is expected here: projet_camille_004_corrompu has a truncated tracking JSON,"
            " so it was rolled back and its source kept",
            file=out,
        )
    raise typer.Exit(code)
