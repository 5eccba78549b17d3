"""``finalcopy verify DEST``: re-check a finished copy against its manifest."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Annotated

import typer

from finalcopy.cli.destination import check_destination
from finalcopy.cli.options import Jobs, LogFile, OutputOptions, SshOptions, with_option_blocks
from finalcopy.cli.runtime import run_cancellable, setup_logging
from finalcopy.errors import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from finalcopy.engine import VerifyReport


@with_option_blocks
def verify_command(
    dest: Annotated[str, typer.Argument(help="A folder written by finalcopy copy (path or URL).")],
    jobs: Jobs = 4,
    *,
    output: OutputOptions,
    log_file: LogFile = None,
    ssh: SshOptions,
) -> None:
    """Re-hash every file listed in DEST's manifest; report missing, changed and unexpected files.

    Exit 0 when everything matches, 1 on any difference.
    """
    check_destination(dest)  # before anything heavy: a typo is answered at once
    # Imported here, not at the top: `finalcopy --help` needs none of them.
    from finalcopy.backends import open_backend
    from finalcopy.cli.render.summary import verify_summary
    from finalcopy.engine import verify_tree

    log = setup_logging(output.verbose, output.quiet, log_file)
    dest_options = ssh.destination_options(jobs)
    renderer = output.renderer(log)

    async def work(cancel: threading.Event) -> VerifyReport:
        backend = await open_backend(dest, dest_options)
        async with backend:
            with renderer:
                report = await verify_tree(backend, jobs=jobs, events=renderer)
                renderer.summary(report.to_dict(), verify_summary(report))
        return report

    report = run_cancellable(work)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)
