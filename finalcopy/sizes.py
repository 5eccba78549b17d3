"""Sizes and rates as operators type them: ``65536``, ``64K``, ``64KiB``, ``1M``, ``2G``.

Binary units (``1K`` is 1024 bytes), as rsync's and rclone's options read
them. One grammar for every option that takes a size (``--chunk-size``,
``bench --size``) or a rate (``--bwlimit``), shared by the CLI and the
engine, which cannot import the CLI.
"""

from __future__ import annotations

import re

from finalcopy.errors import UsageError

#: A number, then a unit letter with an optional ``iB``/``B`` (``64K``, ``64KiB``) or a lone ``B``.
_SIZE = re.compile(r"^\s*(\d+)\s*(?:([kmg])(?:i?b)?|b?)\s*$", re.IGNORECASE)
_FACTOR = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(
    text: str, option: str, *, what: str = "size", examples: str = "examples: 65536, 64K, 1M"
) -> int:
    """Bytes that ``text`` means; a :class:`UsageError` naming ``option`` otherwise."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"{option} '{text}': not a {what} ({examples})")
    return int(match[1]) * _FACTOR[(match[2] or "").lower()]
