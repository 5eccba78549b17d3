"""What every command does around its work: exit codes, one error style, logging, signals.

Exit codes (the README's table): 0 ok, 1 some files or projects failed or
differ, 2 usage error, 3 destination unusable, 130 interrupted.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import typer

from finalcopy.errors import (
    DestinationUnusable,
    FinalcopyError,
    HostKeyError,
    Interrupted,
    NoSpaceError,
    SourceError,
    UsageError,
    unwrap_group,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DESTINATION, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
T = TypeVar("T")


def exit_code_for(exc: FinalcopyError | Interrupted) -> int:
    """The exit code an error that ends a command stands for."""
    if isinstance(exc, Interrupted):
        return EXIT_INTERRUPTED
    if isinstance(exc, UsageError | SourceError):
        return EXIT_USAGE
    if isinstance(exc, DestinationUnusable | HostKeyError | NoSpaceError):
        return EXIT_DESTINATION
    return EXIT_FAILED


def fail(message: str, code: int) -> NoReturn:
    """End the command with one line on stderr, ``finalcopy: error: …``, and ``code``."""
    typer.echo(f"finalcopy: error: {message}", err=True)
    raise typer.Exit(code)


def setup_logging(verbose: int) -> None:
    """Warnings by default, ``-v`` info, ``-vv`` debug; on stderr, beside the progress."""
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)


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
    except (FinalcopyError, Interrupted) as exc:
        fail(str(exc), exit_code_for(exc))
