"""The ``finalcopy`` command line. It parses, runs, renders; the logic lives elsewhere.

Exit codes: 0 ok, 1 some files failed or differ, 2 usage error,
3 destination unusable, 130 interrupted.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import anyio
import typer

from finalcopy import __version__
from finalcopy.backends.registry import DestinationOptions, open_backend
from finalcopy.cli.render import human_bytes, make_renderer
from finalcopy.engine import CopyOptions, CopyReport, VerifyReport, copy_tree, verify_tree
from finalcopy.errors import (
    DestinationUnusable,
    FinalcopyError,
    HostKeyError,
    NoSpaceError,
    SourceError,
    UsageError,
    unwrap_group,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DESTINATION, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
T = TypeVar("T")

app = typer.Typer(
    name="finalcopy",
    help=(
        "Copy finished work to its final storage and prove the copy byte-identical.\n\n"
        "Destinations: a local path, an NTFS/FUSE mount (detected), or "
        "sftp://[user@]host[:port]/path and user@host:path."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``65536``, ``64K``, ``64KiB``, ``1M`` → bytes."""
    match = _SIZE.match(text)
    if not match:
        raise typer.BadParameter(f"'{text}' is not a size (examples: 65536, 64K, 1M)")
    factor = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match[2].lower()]
    return int(match[1]) * factor


def exit_code_for(exc: FinalcopyError) -> int:
    if isinstance(exc, UsageError | SourceError):
        return EXIT_USAGE
    if isinstance(exc, DestinationUnusable | HostKeyError | NoSpaceError):
        return EXIT_DESTINATION
    return EXIT_FAILED


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"finalcopy: error: {message}", err=True)
    raise typer.Exit(code)


def run_cancellable(func: Callable[[threading.Event], Awaitable[T]]) -> T:
    """Run ``func`` under anyio; the first SIGINT/SIGTERM sets its cancel flag.

    The engine then stops at the next chunk, removes its temporary files and
    returns an ``interrupted`` report, which the caller turns into exit 130.
    """
    cancel = threading.Event()

    async def main() -> T:
        result: T
        async with anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        typer.echo(f"finalcopy: {name} received, stopping cleanly…", err=True)
                        cancel.set()

            tg.start_soon(watch_signals)
            result = await func(cancel)
            tg.cancel_scope.cancel()
        return result

    try:
        try:
            return anyio.run(main)
        except BaseExceptionGroup as group:
            raise unwrap_group(group) from None
    except FinalcopyError as exc:
        fail(str(exc), exit_code_for(exc))


def setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)


# -- shared options -----------------------------------------------------------------

VerboseOpt = Annotated[
    int, typer.Option("--verbose", "-v", count=True, help="More output (-vv: debug).")
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="JSON-lines events and a final JSON summary on stdout.")
]
JobsOpt = Annotated[
    int, typer.Option("--jobs", "-j", min=1, max=64, help="Files transferred at once.")
]
MetadataOpt = Annotated[
    str,
    typer.Option(
        "--metadata",
        help="auto: detect NTFS/FUSE and probe chmod/utime; posix: keep mode and mtime; "
        "none: content only, never call chmod/utime.",
    ),
]
NamesOpt = Annotated[
    str,
    typer.Option(
        "--ntfs-names",
        help="On no-metadata destinations: reject names NTFS cannot hold, or map them reversibly.",
    ),
]
IdentityOpt = Annotated[Path | None, typer.Option("--identity", "-i", help="SSH private key file.")]
SshConfigOpt = Annotated[
    Path | None,
    typer.Option("--ssh-config", help="OpenSSH client config to read (default: ~/.ssh/config)."),
]
PortOpt = Annotated[
    int | None, typer.Option("--port", help="SSH port (default: ~/.ssh/config or 22).")
]
KnownHostsOpt = Annotated[
    Path | None,
    typer.Option("--known-hosts", help="known_hosts file (default: ~/.ssh/known_hosts)."),
]
AcceptNewOpt = Annotated[
    bool,
    typer.Option(
        "--accept-new-host-key", help="Record an unknown SSH host key (never a changed one)."
    ),
]
RetriesOpt = Annotated[
    int,
    typer.Option(
        "--retries", envvar="NETWORK_RETRY_ATTEMPTS", min=1, help="Attempts per network operation."
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout", envvar="NETWORK_TIMEOUT", min=1, help="Seconds per network operation."
    ),
]


def destination_options(
    metadata: str,
    ntfs_names: str,
    identity: Path | None,
    port: int | None,
    known_hosts: Path | None,
    accept_new_host_key: bool,
    retries: int,
    timeout: float,
    jobs: int,
    ssh_config: Path | None = None,
) -> DestinationOptions:
    if metadata not in ("auto", "posix", "none"):
        fail(f"--metadata must be auto, posix or none, not '{metadata}'", EXIT_USAGE)
    if ntfs_names not in ("reject", "map"):
        fail(f"--ntfs-names must be reject or map, not '{ntfs_names}'", EXIT_USAGE)
    return DestinationOptions(
        metadata=metadata,  # type: ignore[arg-type]
        ntfs_names=ntfs_names,  # type: ignore[arg-type]
        identity_file=identity,
        port=port,
        known_hosts=known_hosts,
        accept_new_host_key=accept_new_host_key,
        retry_attempts=retries,
        timeout=timeout,
        jobs=jobs,
        ssh_config=ssh_config,
    )


def copy_summary(report: CopyReport) -> list[str]:
    rate = human_bytes(report.bytes_copied / report.duration) + "/s" if report.duration else "-"
    verb = "would copy" if report.dry_run else "copied"
    lines = [
        f"{verb} {report.files - report.skipped} file(s) "
        f"({human_bytes(report.bytes_copied if not report.dry_run else report.bytes)}), "
        f"skipped {report.skipped} already verified, failed {len(report.failed)} "
        f"in {report.duration:.2f} s ({rate}); verify={report.verify}, hash={report.algorithm}"
    ]
    if report.manifest:
        lines.append(f"manifest: {report.manifest}")
    lines += [f"failed: {path}: {error}" for path, error in sorted(report.failed.items())]
    if report.interrupted:
        lines.append("interrupted: temporary files removed; re-run to complete the copy")
    return lines


def verify_summary(report: VerifyReport) -> list[str]:
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


# -- commands -----------------------------------------------------------------------


@app.command()
def copy(
    source: Annotated[Path, typer.Argument(help="Folder to copy (its content goes into DEST).")],
    dest: Annotated[
        str, typer.Argument(help="Destination folder: path, sftp:// URL or user@host:path.")
    ],
    hash_name: Annotated[
        str,
        typer.Option(
            "--hash", help="blake3 (default, fast), sha256 or xxh128 (not cryptographic)."
        ),
    ] = "blake3",
    chunk_size: Annotated[
        str, typer.Option("--chunk-size", help="Bytes per read/write (64K default).")
    ] = "64K",
    jobs: JobsOpt = 4,
    verify: Annotated[
        str,
        typer.Option(
            "--verify",
            help="readback: re-read each file from the destination (server-side hash over SSH) "
            "and compare; size: compare sizes only; none: trust the write.",
        ),
    ] = "readback",
    checksum: Annotated[
        bool, typer.Option("--checksum", "-c", help="Decide what to skip by hashing both sides.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Show what would be copied.")
    ] = False,
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
    """Copy SOURCE into DEST, hashing while streaming, verifying, and writing a manifest.

    Re-running the same copy skips files already verified and completes the rest.
    The manifest DEST/.finalcopy/manifest.<hash> can be checked with b3sum -c,
    sha256sum -c or xxh128sum -c from inside DEST.
    """
    setup_logging(verbose)
    if verify not in ("readback", "size", "none"):
        fail(f"--verify must be readback, size or none, not '{verify}'", EXIT_USAGE)
    options = CopyOptions(
        algorithm=hash_name,
        chunk_size=parse_size(chunk_size),
        jobs=jobs,
        verify=verify,  # type: ignore[arg-type]
        checksum=checksum,
        dry_run=dry_run,
    )
    dest_options = destination_options(
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
    )
    renderer = make_renderer(json_output, verbose > 0)

    async def work(cancel: threading.Event) -> CopyReport:
        options.validate()
        backend = await open_backend(dest, dest_options)
        async with backend:
            with renderer:
                report = await copy_tree(source, backend, options, events=renderer, cancel=cancel)
                renderer.summary(report.to_dict(), copy_summary(report))
        return report

    report = run_cancellable(work)
    if report.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)


@app.command()
def verify(
    dest: Annotated[str, typer.Argument(help="A folder written by finalcopy copy (path or URL).")],
    jobs: JobsOpt = 4,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = 0,
    identity: IdentityOpt = None,
    ssh_config: SshConfigOpt = None,
    port: PortOpt = None,
    known_hosts: KnownHostsOpt = None,
    retries: RetriesOpt = 3,
    timeout: TimeoutOpt = 300.0,
) -> None:
    """Re-hash every file listed in DEST's manifest; report missing, changed and unexpected files.

    Exit 0 when everything matches, 1 on any difference.
    """
    setup_logging(verbose)
    dest_options = destination_options(
        "auto", "reject", identity, port, known_hosts, False, retries, timeout, jobs, ssh_config
    )
    renderer = make_renderer(json_output, verbose > 0)

    async def work(cancel: threading.Event) -> VerifyReport:
        backend = await open_backend(dest, dest_options)
        async with backend:
            with renderer:
                report = await verify_tree(backend, jobs=jobs, events=renderer)
                renderer.summary(report.to_dict(), verify_summary(report))
        return report

    report = run_cancellable(work)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"finalcopy {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """Copy finished work to its final storage and prove the copy byte-identical."""


def main() -> Any:
    """Console-script entry point."""
    try:
        return app()
    except BrokenPipeError:
        # The reader went away (`finalcopy copy … | head`): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_FAILED)


from finalcopy.cli import pipeline as _pipeline  # noqa: E402,F401  (registers run and demo)
