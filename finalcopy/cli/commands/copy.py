"""``finalcopy copy SOURCE DEST``: the verified copy of one folder, with its manifest."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from finalcopy.cli.destination import check_destination, check_not_a_file
from finalcopy.cli.options import (
    Checksum,
    FilesystemOptions,
    Jobs,
    LogFile,
    OutputOptions,
    SshOptions,
    TransferOptions,
    dry_run_option,
    with_option_blocks,
)
from finalcopy.cli.runtime import run_cancellable, setup_logging
from finalcopy.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

if TYPE_CHECKING:
    from finalcopy.engine import CopyReport


@with_option_blocks
def copy_command(
    source: Annotated[Path, typer.Argument(help="Folder to copy (its content goes into DEST).")],
    dest: Annotated[
        str, typer.Argument(help="Destination folder: path, sftp:// URL or user@host:path.")
    ],
    transfer: TransferOptions,
    jobs: Jobs = 4,
    checksum: Checksum = False,
    dry_run: Annotated[bool, dry_run_option("Show what would be copied; write nothing.")] = False,
    *,
    output: OutputOptions,
    log_file: LogFile = None,
    filesystem: FilesystemOptions,
    ssh: SshOptions,
) -> None:
    """Copy SOURCE into DEST, hashing while streaming, verifying, and writing a manifest.

    Re-running the same copy skips files already verified and completes the rest.
    The manifest DEST/.finalcopy/manifest.<hash> can be checked with b3sum -c,
    sha256sum -c or xxh128sum -c from inside DEST.
    """
    check_destination(dest)  # before anything heavy: a typo is answered at once
    # Imported here, not at the top: `finalcopy --help` needs none of them.
    from finalcopy.backends import open_backend
    from finalcopy.cli.render.summary import copy_summary
    from finalcopy.engine import copy_tree

    log = setup_logging(output.verbose, output.quiet, log_file)
    options = transfer.copy_options(jobs, checksum=checksum, dry_run=dry_run)
    dest_options = ssh.destination_options(jobs, filesystem)
    renderer = output.renderer(log)

    async def work(cancel: threading.Event) -> CopyReport:
        options.validate()
        check_not_a_file(dest)
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
