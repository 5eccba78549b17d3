"""``--bwlimit RATE``: the bandwidth option of :class:`~finalcopy.cli.options.TransferOptions`.

Declared in that block like its siblings, so ``copy``, ``run`` and any other
command taking the block share one definition; written here only because
:mod:`finalcopy.cli.options` is at the CLI's module size bound. The grammar,
the timetable and the limiter are the engine's (:mod:`finalcopy.engine.bandwidth`),
imported when a value is checked, never for ``--help``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from finalcopy.engine.bandwidth import BandwidthLimiter

HELP = (
    "Bytes/s for the whole command, all files and jobs together, in binary units "
    "(10M = 10 MiB/s, 512K, 1048576; off or 0: no limit), or a daily timetable "
    "'08:00,10M 19:00,off' (10M from 08:00, no limit from 19:00)."
)


def _check(text: str) -> str:
    """Refused as typer refuses a value: the error names the option, or its variable."""
    from finalcopy.engine.bandwidth import OPTION, parse_bwlimit
    from finalcopy.errors import UsageError

    try:
        parse_bwlimit(text)
    except UsageError as exc:
        raise typer.BadParameter(str(exc).removeprefix(f"{OPTION} ")) from None
    return text


@functools.cache
def limiter(text: str) -> BandwidthLimiter | None:
    """The one limiter of this command for ``text`` (None: no limit).

    Cached, so that however many times a command turns its options into the
    engine's (``bench`` does it once per setting), every copy draws from the
    same bucket: one limit per invocation, as ``--bwlimit`` promises.
    """
    from finalcopy.engine.bandwidth import limiter_for

    return limiter_for(text)


def bwlimit_option(panel: str) -> Any:
    """``--bwlimit`` (or ``FINALCOPY_BWLIMIT``), shown in the help panel ``panel``."""
    return typer.Option(
        "--bwlimit",
        envvar="FINALCOPY_BWLIMIT",
        metavar="RATE",
        callback=_check,
        rich_help_panel=panel,
        help=HELP,
    )
