"""Build a folder tree from a dict and read one back: the tests' fixtures and proofs."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["digests", "exact_snapshot", "make_tree", "snapshot", "tree_content"]


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Create ``files`` (relative path → content) under ``root``; return ``root``."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def tree_content(root: Path, skip: Sequence[str] = (".finalcopy",)) -> dict[str, bytes]:
    """Relative path → bytes of every regular file below ``root`` (links left out)."""
    out: dict[str, bytes] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if rel.split("/")[0] in skip or path.is_symlink() or not path.is_file():
            continue
        out[rel] = path.read_bytes()
    return out


def digests(root: Path) -> dict[str, str]:
    """Every regular file below ``root`` (``.finalcopy/`` left out) → sha256."""
    out: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not (Path(folder) == root and d == ".finalcopy")]
        for name in files:
            path = Path(folder, name)
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry below ``root`` with size and mtime: proof that nothing was touched."""
    out: dict[str, tuple[int, int]] = {}
    if not root.exists():
        return out
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(Path(folder, name))
            rel = Path(folder, name).relative_to(root).as_posix()
            out[rel] = (st.st_size if name in files else 0, st.st_mtime_ns)
    return out


def exact_snapshot(folder: Path) -> dict[str, tuple[bytes | str, int, int]]:
    """``folder`` and all below it: content or link target, mode, mtime.

    Stricter than :func:`snapshot`: what proves that a write which must stay
    inside a destination changed nothing outside it.
    """
    out: dict[str, tuple[bytes | str, int, int]] = {}
    for path in [folder, *folder.rglob("*")]:
        st = path.lstat()
        if path.is_symlink():
            content: bytes | str = os.readlink(path)
        elif path.is_file():
            content = path.read_bytes()
        else:
            content = "<dir>"
        out[str(path.relative_to(folder))] = (content, st.st_mode, st.st_mtime_ns)
    return out
