"""The ``finalcopy`` command line: creates the typer app and registers the commands.

Each command lives in its own module under :mod:`finalcopy.cli.commands`, the
options they share in :mod:`finalcopy.cli.options`, exit codes and signal
handling in :mod:`finalcopy.cli.runtime`, and the rendering in
:mod:`finalcopy.cli.render`. Nothing imports this module back.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from finalcopy import __version__
from finalcopy.cli.commands.copy import copy_command
from finalcopy.cli.commands.demo import demo_command
from finalcopy.cli.commands.run import run_command
from finalcopy.cli.commands.verify import verify_command
from finalcopy.cli.runtime import EXIT_FAILED

app = typer.Typer(
    name="finalcopy",
    help=(
        "Copy finished work to its final storage and prove the copy byte-identical.\n\n"
        "Destinations: a local path, an NTFS/FUSE mount (detected), or "
        # Escaped: rich would read "[user@]" as markup and drop it.
        "sftp://\\[user@]host[:port]/path and user@host:path."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("copy")(copy_command)
app.command("verify")(verify_command)
app.command("run")(run_command)
app.command("demo")(demo_command)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"finalcopy {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version."),
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
