"""Time finalcopy and other copy tools on the same trees, in the same run.

Ratios only mean something between tools measured on one machine, one tree
and one page-cache state, so every tool runs here, interleaved: run ``i``
starts with tool ``i mod n`` (rotated order), which spreads slow drifts
(thermal throttling, a neighbour's load, cache warm-up) evenly over the tools
instead of charging them to whichever came first or last.

``python -m benchmarks.run --help`` lists the options; ``benchmarks/README.md``
explains the targets, the columns and the modules:

- ``targets.py``: where the copies land (local folder, SSH server), sshd and NTFS helpers
- ``tools.py``: the registry of tools and how each builds its command
- ``measure.py``: checking the copy, the rotated runs
- ``report.py``: the markdown tables
- ``cli.py``: the options and ``main``

The workload generator, the other tools' command lines, the timing of one
command and the machine facts are :mod:`finalcopy.bench`'s, shared with
``finalcopy bench``: one harness, not two.
"""

from __future__ import annotations

import sys

from benchmarks.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
