"""``python -m benchmarks.workloads NAME DEST``: build one of the benchmarks' source trees.

The generator itself is :mod:`finalcopy.bench.workload`, shared with
``finalcopy bench`` so that users and developers time the same trees; this
module is only its command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from finalcopy.bench.workload import WORKLOADS, generate

__all__ = ["WORKLOADS", "generate", "main"]

MiB = 1 << 20


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints what was built and how long it took."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.workloads",
        description="Build a deterministic benchmark tree in DEST/NAME.",
    )
    parser.add_argument("name", choices=sorted(WORKLOADS))
    parser.add_argument("dest", type=Path, help="the tree is created in DEST/NAME")
    parser.add_argument("--scale", type=float, default=1.0, help="size factor (default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="change to get another tree")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        root = generate(args.name, args.dest, args.scale, args.seed)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    files = total = 0
    for folder, _dirs, names in os.walk(root):
        for file_name in names:
            files += 1
            total += os.stat(os.path.join(folder, file_name)).st_size
    print(f"{root}: {files} files, {total / MiB:.1f} MiB in {elapsed:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
