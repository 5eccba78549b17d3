"""The machine a measurement was made on: what a reader needs before trusting a number.

Throughput depends on the CPU, the kernel, the Python and the load as much
as on the storage, so every report (``finalcopy bench``, ``benchmarks/``)
carries them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
from pathlib import Path

from finalcopy import __version__
from finalcopy.cpus import cores

__all__ = ["machine_facts", "proc_field"]


def proc_field(path: str, key: str) -> str | None:
    """The value of ``key:`` in a /proc file such as /proc/meminfo (None when absent)."""
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    return None


def machine_facts() -> dict[str, str]:
    """Date, CPU model, cores, memory, kernel, Python, finalcopy version, load average."""
    mem_kib = proc_field("/proc/meminfo", "MemTotal") or "0 kB"
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "nproc": str(cores()),
        "memory": f"{int(mem_kib.split()[0]) / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "finalcopy": __version__,
        # A busy machine explains a wide min-max spread better than any setting does.
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
