"""finalcopy: move finished work to its final storage, verified, so nothing is lost.

The public API, imported on first use so that ``import finalcopy`` stays light:

* :func:`copy_tree`, :func:`verify_tree`, :class:`CopyOptions` — the engine;
* :func:`open_backend`, :class:`DestinationOptions` — destinations;
* :func:`run_finalization` (async), :func:`finalize_sync`, :class:`Settings`,
  :class:`RunReport` — the pipeline step a workflow service calls.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "CopyOptions": "finalcopy.engine",
    "CopyReport": "finalcopy.engine",
    "copy_tree": "finalcopy.engine",
    "verify_tree": "finalcopy.engine",
    "DestinationOptions": "finalcopy.backends",
    "open_backend": "finalcopy.backends",
    "RunReport": "finalcopy.finalize",
    "Settings": "finalcopy.finalize",
    "finalize_sync": "finalcopy.finalize",
    "run_finalization": "finalcopy.finalize",
}

__all__ = [
    "CopyOptions",
    "CopyReport",
    "DestinationOptions",
    "RunReport",
    "Settings",
    "__version__",
    "copy_tree",
    "finalize_sync",
    "open_backend",
    "run_finalization",
    "verify_tree",
]

if TYPE_CHECKING:
    from finalcopy.backends import DestinationOptions, open_backend
    from finalcopy.engine import CopyOptions, CopyReport, copy_tree, verify_tree
    from finalcopy.finalize import RunReport, Settings, finalize_sync, run_finalization


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'finalcopy' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
