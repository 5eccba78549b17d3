"""``finalcopy copy SOURCE DEST``: the verified copy of one folder, with its manifest."""

from __future__ import annotations

import dataclasses
import functools
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from finalcopy.cli import options as cli
from finalcopy.cli.destination import check_destination, check_not_a_file
from finalcopy.cli.runtime import forked_helpers, run_cancellable, setup_logging
from finalcopy.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

if TYPE_CHECKING:
    from finalcopy.backends.helpers import Helpers
    from finalcopy.engine import CopyReport


@cli.with_option_blocks
def copy_command(
    source: Annotated[Path, typer.Argument(help="Folder to copy (its content goes into DEST).")],
    dest: Annotated[
        str, typer.Argument(help="Destination folder: path, sftp:// URL or user@host:path.")
    ],
    transfer: cli.TransferOptions,
    jobs: cli.Jobs = 4,
    checksum: cli.Checksum = False,
    dry_run: Annotated[
        bool, cli.dry_run_option("Show what would be copied; write nothing.")
    ] = False,
    *,
    output: cli.OutputOptions,
    log_file: cli.LogFile = None,
    filesystem: cli.FilesystemOptions,
    ssh: cli.SshOptions,
) -> None:
    """Copy SOURCE into DEST, hashing while streaming, verifying, and writing a manifest.

    Re-running the same copy skips files already verified and completes the rest.
    The manifest DEST/.finalcopy/manifest.<hash> can be checked with b3sum -c,
    sha256sum -c or xxh128sum -c from inside DEST.
    """
    check_destination(dest)  # before anything heavy: a typo is answered at once
    # Imported here, not at the top: `finalcopy --help` needs none of them.
    from finalcopy.backends import open_backend
    from finalcopy.cli.render.base import header
    from finalcopy.cli.render.summary import bwlimit_header, copy_summary
    from finalcopy.engine import copy_tree
    from finalcopy.engine.bandwidth import bwlimit_json

    log = setup_logging(output.verbose, output.quiet, log_file)
    options = transfer.copy_options(jobs, checksum=checksum, dry_run=dry_run)
    dest_options = ssh.destination_options(jobs, filesystem)
    renderer = output.renderer(log)

    async def work(cancel: threading.Event, helpers: Helpers | None) -> CopyReport:
        options.validate()
        check_not_a_file(dest)
        backend = await open_backend(dest, dataclasses.replace(dest_options, helpers=helpers))
        async with backend:
            header(bwlimit_header(options.bwlimit), output.json_output, output.quiet)
            with renderer:
                report = await copy_tree(source, backend, options, events=renderer, cancel=cancel)
                data = {**report.to_dict(), "bwlimit": bwlimit_json(options.bwlimit)}
                renderer.summary(data, copy_summary(report, options.bwlimit))
        return report

    with forked_helpers(dest, 1 if dry_run else jobs) as helpers:
        report = run_cancellable(functools.partial(work, helpers=helpers))
    if report.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)
