"""The generic transfer engine: plan a tree, stream and hash it, verify, keep a manifest.

It knows nothing about videos or projects; :mod:`finalcopy.finalize` builds the
pipeline step on top of it.
"""

from finalcopy.engine.copier import copy_tree
from finalcopy.engine.events import (
    BytesProgress,
    Event,
    EventSink,
    FileFailed,
    FileFinished,
    FileStarted,
    Listing,
    Notice,
    PlanReady,
    Retry,
    discard,
)
from finalcopy.engine.options import CopyOptions, CopyReport
from finalcopy.engine.plan import META_DIR
from finalcopy.engine.source import ContentInspector
from finalcopy.engine.verify import VerifyReport, verify_tree

__all__ = [
    "META_DIR",
    "BytesProgress",
    "ContentInspector",
    "CopyOptions",
    "CopyReport",
    "Event",
    "EventSink",
    "FileFailed",
    "FileFinished",
    "FileStarted",
    "Listing",
    "Notice",
    "PlanReady",
    "Retry",
    "VerifyReport",
    "copy_tree",
    "discard",
    "verify_tree",
]
