"""Hash algorithms the engine streams through, named as the standard tools name them.

Each algorithm's manifest is readable by a standard checker: ``b3sum -c``,
``sha256sum -c`` or ``xxh128sum -c``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import blake3
import xxhash


class Hasher(Protocol):
    """The subset of the hashlib interface the engine uses."""

    def update(self, data: bytes | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


@dataclass(frozen=True)
class Algorithm:
    """A hash algorithm, with the command that checks its manifest."""

    name: str
    checker: str
    new: Callable[[], Hasher]

    @property
    def manifest_name(self) -> str:
        return f"manifest.{self.name}"


def _new_blake3() -> Hasher:
    # blake3-py releases the GIL for large inputs, so two copy threads hash in parallel.
    h: Hasher = blake3.blake3()
    return h


def _new_sha256() -> Hasher:
    return hashlib.sha256()


def _new_xxh128() -> Hasher:
    h: Hasher = xxhash.xxh3_128()
    return h


ALGORITHMS: dict[str, Algorithm] = {
    "blake3": Algorithm("blake3", "b3sum", _new_blake3),
    "sha256": Algorithm("sha256", "sha256sum", _new_sha256),
    "xxh128": Algorithm("xxh128", "xxh128sum", _new_xxh128),
}

DEFAULT_ALGORITHM = "blake3"


def get_algorithm(name: str) -> Algorithm:
    """Look an algorithm up by name, with a clear error for unknown names."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        from finalcopy.errors import UsageError

        known = ", ".join(ALGORITHMS)
        raise UsageError(f"unknown hash algorithm '{name}' (choose from {known})") from None
