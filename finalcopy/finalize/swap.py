"""``--on-existing replace``: the verified new copy takes the project's name.

The previous copy is never deleted: it is renamed aside
(``<project>__replaced_<date>``; a symbolic link is renamed as the link, its
target untouched) for the operator to remove. The journal records the
``swapping`` phase before the first rename, and :func:`swap_into_place` is
idempotent, so a re-run after a crash between the two renames finishes them.
"""

from __future__ import annotations

from finalcopy.backends import Backend
from finalcopy.errors import FinalcopyError, ProjectFailure
from finalcopy.finalize.target import DestinationHold


async def swap_into_place(
    output: Backend, hold: DestinationHold, target: str, old: str, aside: str
) -> tuple[str, str]:
    """Rename ``old`` to ``aside``, then ``target`` to ``old``; returns (copy's folder, warning).

    The destination locks are checked first (a lost lock raises). When a
    rename fails the new copy stays in ``target`` and the warning says so;
    nothing is ever deleted.
    """
    await hold.check()
    st_old, st_aside, st_target = await output.stat([old, aside, target])
    if st_target is None:
        return old, ""  # both renames were done by an interrupted run
    try:
        if st_old is not None:
            if st_aside is not None:
                raise ProjectFailure(f"'{output.describe(aside)}' exists already")
            await output.rename(old, aside)
            hold.moved(old, aside)
        await output.rename(target, old)
        hold.moved(target, old)
    except FinalcopyError as exc:
        return target, (
            f"could not put the new copy in place of '{output.describe(old)}' ({exc}); "
            f"it stays in '{output.describe(target)}'"
        )
    return old, (
        f"The previous copy of '{old}' is kept as '{output.describe(aside)}'; "
        "remove it when it is no longer needed."
    )
