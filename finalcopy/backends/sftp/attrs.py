"""Server paths and what SFTP attributes say about them."""

from __future__ import annotations

import posixpath
import stat

import asyncssh

from finalcopy.backends.base import DestStat, EntryKind, entry_kind, temp_name


def remote_join(base: str, path: str) -> str:
    """Absolute server path of ``path`` (relative POSIX) below ``base``."""
    return posixpath.join(base, path) if path else base


def tmp_path(final: str) -> str:
    """The temporary name beside ``final`` (see :func:`~finalcopy.backends.base.temp_name`)."""
    return posixpath.join(posixpath.dirname(final), temp_name(posixpath.basename(final)))


def steps(folder: str) -> list[str]:
    """The folders from the root down to ``folder``: ``a``, ``a/b``, ``a/b/c``."""
    if not folder:
        return []
    parts = folder.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def metadata_attrs(mode: int | None, mtime_ns: int | None) -> asyncssh.SFTPAttrs:
    """The attributes that set the permission bits of ``mode`` and ``mtime_ns`` (atime too).

    SFTP v3 carries whole seconds; a None leaves that attribute alone.
    """
    seconds = None if mtime_ns is None else mtime_ns // 1_000_000_000
    permissions = None if mode is None else stat.S_IMODE(mode)
    return asyncssh.SFTPAttrs(permissions=permissions, atime=seconds, mtime=seconds)


def kind_of(attrs: asyncssh.SFTPAttrs) -> EntryKind:
    """The kind of entry the attributes describe."""
    return entry_kind(attrs.permissions or 0)


def mtime_ns_of(attrs: asyncssh.SFTPAttrs) -> int:
    """The mtime in ns (SFTP v3, as OpenSSH speaks it, carries whole seconds)."""
    return (attrs.mtime or 0) * 1_000_000_000 + (attrs.mtime_ns or 0)


def to_stat(attrs: asyncssh.SFTPAttrs) -> DestStat:
    """The :class:`~finalcopy.backends.base.DestStat` of the attributes."""
    return DestStat(
        kind_of(attrs),
        attrs.size or 0,
        mtime_ns_of(attrs),
        stat.S_IMODE(attrs.permissions or 0),
    )
