"""``finalcopy bench DEST``: how fast finalcopy copies to this storage, with which settings.

The settings are comma lists and the matrix is their product; the options
that are not under test (SSH, file system, and any other transfer option
``copy`` has) are ``copy``'s own blocks, so they mean the same thing here.
The measuring is :mod:`finalcopy.bench`; this module parses and prints.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer

from finalcopy.bench.workload import DEFAULT_SMALL_FILES
from finalcopy.choices import AlgorithmName, VerifyMode
from finalcopy.cli.destination import check_destination
from finalcopy.cli.options import (
    PERFORMANCE,
    VERIFICATION,
    FilesystemOptions,
    OutputOptions,
    SshOptions,
    TransferOptions,
    parse_chunk_size,
    parse_size,
    with_option_blocks,
)
from finalcopy.cli.runtime import fail, forked_helpers, run_cancellable, setup_logging
from finalcopy.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from finalcopy.backends.helpers import Helpers
    from finalcopy.bench.matrix import Setting
    from finalcopy.bench.runner import BenchResult
    from finalcopy.engine import CopyOptions

T = TypeVar("T")
BENCHMARK = "Benchmark"


def _option(*names: str, panel: str = BENCHMARK, text: str, **checks: Any) -> Any:
    """A ``typer.Option`` in ``panel`` (the Benchmark one unless said), ``text`` its help."""
    return typer.Option(*names, rich_help_panel=panel, help=text, **checks)


def _listed(name: str, panel: str, what: str) -> Any:
    """An option whose value is a comma list of the values to compare."""
    return _option(name, panel=panel, text=f"{what} to compare, a comma list: {LISTS[name]}.")


LISTS = {
    "--hash": "blake3, sha256, xxh128",
    "--verify": "readback, size, none",
    "--chunk-size": "each 4K to 16M (64K,1M)",
    "--jobs": "each 1 to 64 (1,2,4,8)",
}


@dataclass(frozen=True)
class MatrixOptions(TransferOptions):
    """``copy``'s transfer options, with ``--hash``, ``--chunk-size`` and ``--verify`` as lists.

    A subclass, so every other transfer option ``copy`` has (a bandwidth
    limit, say) is a ``bench`` option too, with the same meaning, and
    reaches the engine through :meth:`TransferOptions.copy_options`. The
    three are strings here where ``copy`` has its choices' types: hence the
    ``type: ignore``; :func:`_settings` checks every value of the lists.
    """

    hash_name: Annotated[str, _listed("--hash", VERIFICATION, "Hashes")] = "blake3"  # type: ignore[assignment]
    chunk_size: Annotated[str, _listed("--chunk-size", PERFORMANCE, "Chunk sizes")] = "64K,1M"
    verify: Annotated[str, _listed("--verify", VERIFICATION, "Verification modes")] = "readback"  # type: ignore[assignment]


def _each(text: str, option: str, convert: Callable[[str], T]) -> list[T]:
    """The comma list ``text``, each item converted, duplicates dropped, order kept."""
    items = [convert(item.strip()) for item in text.split(",") if item.strip()]
    if not items:
        fail(f"{option} '{text}': give at least one value", EXIT_USAGE)
    return list(dict.fromkeys(items))


def _choice(option: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    def convert(item: str) -> str:
        if item not in choices:
            fail(f"{option} '{item}': is not one of {', '.join(choices)}", EXIT_USAGE)
        return item

    return convert


def _jobs(item: str) -> int:
    if not item.isdigit() or not 1 <= int(item) <= 64:
        fail(f"--jobs '{item}': must be a whole number from 1 to 64", EXIT_USAGE)
    return int(item)


def _settings(jobs: str, matrix: MatrixOptions) -> list[Setting]:
    from finalcopy.bench.matrix import settings_product

    return settings_product(
        _each(jobs, "--jobs", _jobs),
        _each(matrix.chunk_size, "--chunk-size", parse_chunk_size),
        _each(matrix.hash_name, "--hash", _choice("--hash", typing.get_args(AlgorithmName))),
        _each(matrix.verify, "--verify", _choice("--verify", typing.get_args(VerifyMode))),
    )


def _options_for(matrix: MatrixOptions) -> Callable[[Setting], CopyOptions]:
    """A setting's engine options: the matrix block with that setting's values."""

    def options(setting: Setting) -> CopyOptions:
        block = replace(
            matrix,
            hash_name=cast("AlgorithmName", setting.algorithm),
            chunk_size=str(setting.chunk_size),
            verify=cast("VerifyMode", setting.verify),
        )
        return block.copy_options(setting.jobs)

    return options


def _compare_keys(text: str | None) -> list[str] | None:
    if text is None:
        return None
    from finalcopy.bench.tools import TOOLS

    known = tuple(dict.fromkeys(t.key for t in TOOLS))
    return _each(text, "--compare", _choice("--compare", known))


@with_option_blocks
def bench_command(
    dest: Annotated[
        str, typer.Argument(help="Folder to measure: path, sftp:// URL or user@host:path.")
    ],
    size: Annotated[str, _option("--size", text="Size of the generated workload (512M, 2G).")] = (
        "512M"
    ),
    small_files: Annotated[
        int,
        _option(
            "--small-files",
            min=0,
            text="Small files (2–12 KiB) among the workload's videos, JSON and CSV; "
            "raise it (10000) to measure the cost per file.",
        ),
    ] = DEFAULT_SMALL_FILES,
    source: Annotated[
        Path | None,
        _option("--source", text="Copy this folder instead of a generated workload (only read)."),
    ] = None,
    runs: Annotated[
        int, _option("--runs", min=1, text="Runs of each setting, in rounds whose order rotates.")
    ] = 3,
    compare: Annotated[
        str | None,
        _option(
            "--compare",
            text="Also time these tools, alternated with the best setting: cp, rsync, rclone "
            "(local), scp, sftp, rsync, rclone (SFTP).",
        ),
    ] = None,
    save_svg: Annotated[
        Path | None, _option("--save-svg", text="Also save the results as an SVG picture.")
    ] = None,
    jobs: Annotated[str, _listed("--jobs", PERFORMANCE, "Files in flight")] = "1,4",
    *,
    matrix: MatrixOptions,
    output: OutputOptions,
    filesystem: FilesystemOptions,
    ssh: SshOptions,
) -> None:
    """Measure how fast finalcopy copies to DEST, under a few settings, and what limits it.

    A workload shaped like real work (a few large videos, multi-MiB JSON and
    CSV, many thumbnails) is generated where reading it is never the limit
    (/dev/shm when it has room), or taken from --source, then copied by the
    engine under every combination of --jobs, --chunk-size, --hash and
    --verify. Each copy goes to a fresh folder inside DEST/finalcopy-bench-<random>/,
    which is removed at the end, also on Ctrl-C or an error: DEST is left
    as it was found. Progress goes to stderr, the table (or --json) to stdout.
    -P and --stats do not apply: progress is one line per run.

    The defaults, jobs 1,4 × chunk 64K,1M × blake3 × readback with 3 runs
    (4 settings, 12 copies of 512 MiB: about a minute on a local disk), answer
    the two questions whose answers change most between storages: do files in
    parallel help (over a network and on fast disks they do), and does the
    size of each request matter (FUSE, NTFS and SFTP pay per request).
    blake3 with read-back is what copy does by default.
    """
    check_destination(dest)  # before anything heavy: a typo is answered at once
    total = parse_size(size, "--size")
    if total < 1 << 20:
        fail(f"--size '{size}': must be at least 1M", EXIT_USAGE)
    settings = _settings(jobs, matrix)
    keys = _compare_keys(compare)
    # Imported here, not at the top: `finalcopy --help` needs none of them.
    from rich.console import Console

    from finalcopy.bench.report import print_report, to_json, write_svg
    from finalcopy.bench.runner import BenchPlan, run_bench
    from finalcopy.cli.render.base import warn
    from finalcopy.cli.render.engine import JsonRenderer

    setup_logging(output.verbose, output.quiet)
    chatty = not (output.json_output or output.quiet)
    plan = BenchPlan(
        dest=dest,
        dest_options=ssh.destination_options(max(s.jobs for s in settings), filesystem),
        settings=settings,
        options_for=_options_for(matrix),
        runs=runs,
        size=total,
        small_files=small_files,
        source=source,
        compare=keys,
    )

    def say(text: str) -> None:
        if chatty:
            print(f"bench: {text}", file=sys.stderr, flush=True)

    def warn_unless_quiet(text: str) -> None:
        if not output.quiet:
            warn(text)

    async def work(cancel: threading.Event, helpers: Helpers | None) -> BenchResult:
        with_helpers = replace(plan, dest_options=replace(plan.dest_options, helpers=helpers))
        return await run_bench(with_helpers, say, warn_unless_quiet, cancel)

    # Helpers as copy has them: the same picture.
    with forked_helpers(dest, max(s.jobs for s in settings)) as helpers:
        result = run_cancellable(functools.partial(work, helpers=helpers))
    if result.interrupted:
        fail(f"interrupted; '{dest}' is as it was found", EXIT_INTERRUPTED)
    failed = any(r.error for r in result.results)
    if output.json_output:
        JsonRenderer().emit(to_json(result))  # stamps "time"; survives `| head`
    elif failed or not output.quiet:  # -q: errors only, as for copy
        wide = sys.stdout.isatty() or "COLUMNS" in os.environ
        print_report(Console(width=None if wide else 120), result)
    if save_svg is not None:
        write_svg(result, save_svg)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)
