"""``finalcopy demo [DIR]``: a sample work directory to try ``finalcopy run`` on."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from finalcopy.cli.commands.run import finalize
from finalcopy.cli.options import OutputOptions, with_option_blocks
from finalcopy.cli.runtime import fail
from finalcopy.errors import EXIT_USAGE


@with_option_blocks
def demo_command(
    directory: Annotated[
        Path, typer.Argument(help="Where to create projets_extraits/ (and, after a run, the rest).")
    ] = Path("demo"),
    run: Annotated[
        bool, typer.Option("--run", help="Then finalize it with `finalcopy run`'s defaults.")
    ] = False,
    *,
    output: OutputOptions,
) -> None:
    """Create a sample projets_extraits/ with ready, not-ready and corrupt projects.

    Then: cd DIRECTORY/projets_extraits && finalcopy run (or use --run). With the
    defaults, /mnt/cache is used if it exists and is writable, else the copy lands
    in DIRECTORY/_finalized_output/; logs go to DIRECTORY/logs/step7/ and
    archives to DIRECTORY/archives/.
    """
    # Imported here, not at the top: `finalcopy --help` needs none of them.
    from finalcopy.engine import CopyOptions
    from finalcopy.errors import UsageError
    from finalcopy.finalize.demo import generate_demo

    try:
        work = generate_demo(directory)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    out = sys.stderr if output.json_output else sys.stdout
    print(f"sample work directory: {work.resolve()}", file=out)
    if not run:
        print(f"next: cd {work} && finalcopy run", file=out)
        raise typer.Exit(0)
    code = finalize(
        {"work_dir": work, "verbose": output.verbose > 0, "copy": CopyOptions()}, output
    )
    if code == 1:
        print(
            "exit 1 is expected here: projet_camille_004_corrompu has a truncated tracking JSON,"
            " so it was rolled back and its source kept",
            file=out,
        )
    raise typer.Exit(code)
