"""What every command does around its work: exit codes, one error style, logging, signals.

Exit codes (the README's table) are defined with the errors they stand for,
in :mod:`finalcopy.errors`: 0 ok, 1 some files or projects failed or differ,
2 usage error, 3 destination unusable, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer

from finalcopy.errors import EXIT_USAGE, FinalcopyError, Interrupted, unwrap_group

if TYPE_CHECKING:
    from finalcopy.backends.helpers import Helpers

T = TypeVar("T")


def fail(message: str, code: int) -> NoReturn:
    """End the command with one line on stderr, ``finalcopy: error: …``, and ``code``."""
    typer.echo(f"finalcopy: error: {message}", err=True)
    raise typer.Exit(code)


class _Stderr:
    """``sys.stderr`` as it is at each write: under a live display, rich's proxy, which
    prints log lines above the bars instead of through them."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def setup_logging(
    verbose: int, quiet: bool = False, log_file: Path | None = None
) -> logging.Logger | None:
    """Warnings by default, ``-v`` info, ``-vv`` debug, ``-q`` errors; on stderr.

    ``log_file`` also receives every record from info up (debug with ``-vv``),
    in the log format of ``finalcopy run``; the logger returned writes there only
    (for what the renderer shows: files, failures, the summary).
    """
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    if quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=_Stderr())
    if log_file is not None:
        from finalcopy.finalize.logs import DATE_FORMAT, FORMAT

        try:
            to_file = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            fail(f"--log-file '{log_file}': {exc.strerror or exc}", EXIT_USAGE)
        to_file.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
        to_file.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
        root = logging.getLogger()
        for handler in root.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.level < level:
                handler.setLevel(level)  # the console keeps its own level
        root.addHandler(to_file)
        root.setLevel(min(root.level, to_file.level))
        shown = logging.getLogger("finalcopy.cli.log")
        shown.propagate = False
        shown.setLevel(logging.INFO)
        shown.addHandler(to_file)
        return shown
    return None


def run_cancellable(func: Callable[[threading.Event], Awaitable[T]]) -> T:
    """Run ``func`` under anyio; the first SIGINT/SIGTERM sets its cancel flag.

    The engine then stops at the next chunk, removes its temporary files and
    returns an ``interrupted`` report, which the caller turns into exit 130.
    An error that escapes ``func`` ends the command with :func:`fail`.
    """
    import anyio  # here: `finalcopy --help` and `finalcopy demo` never start an event loop

    cancel = threading.Event()

    async def main() -> T:
        result: T
        async with anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        # sys.stderr at call time: under a live display, rich's proxy
                        # prints it above the bars instead of under the next frame.
                        print(f"finalcopy: {name} received, stopping cleanly…", file=sys.stderr)
                        sys.stderr.flush()
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
    except (FinalcopyError, Interrupted) as exc:
        fail(str(exc), exc.exit_code)


@contextlib.contextmanager
def forked_helpers(dest: str, jobs: int) -> Iterator[Helpers | None]:
    """Helper processes that send batches to ``dest`` beside this one (see
    :mod:`finalcopy.backends.helpers`) for the ``with`` body, then ended. Forked on
    entry, while this process has one thread and a fork costs milliseconds: one per
    CPU but this process's, and no more than ``jobs`` less the batch this process
    sends itself. None for a destination that does not parse (the command says why)."""
    from finalcopy.backends.helpers import Helpers
    from finalcopy.backends.registry import parse_destination
    from finalcopy.cpus import cores

    try:
        parse_destination(dest)
    except FinalcopyError:
        yield None
        return
    helpers = Helpers.fork(min(cores(), jobs) - 1)
    try:
        yield helpers
    finally:
        if helpers is not None:
            helpers.close()
