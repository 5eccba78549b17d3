"""Validate analysis artifacts while they stream through the copy: JSON parses, CSV is sane.

The inspectors below are fed the very chunks the engine copies
(:class:`~finalcopy.engine.ContentInspector`), so a 500 MB tracking JSON is
validated without a second read and without ever being held in memory.

JSON is checked by yajl 2, the C parser ijson's fast backends use. ijson's
event API builds one Python object per token and runs about ten times slower
than the copy needs; yajl driven with no callbacks validates at hundreds of
MB/s and, called through ctypes, without holding the GIL, so validation
overlaps the other copy threads. The system's libyajl 2 is loaded the
documented ways: ``ctypes.CDLL("libyajl.so.2")`` (the dynamic loader's search,
``LD_LIBRARY_PATH`` included), then ``ctypes.util.find_library("yajl")``; on
Debian it is the package ``libyajl2``. Without it, ijson's push API
(``basic_parse_coro``, on ijson's best backend) validates instead: equally
strict, about ten times slower; the choice is logged at debug level.

Strict JSON (RFC 8259), as ijson and every non-Python reader see it:
``NaN``/``Infinity`` (which Python's ``json`` accepts) are rejected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finalcopy.engine import ContentInspector
from finalcopy.errors import SourceError

log = logging.getLogger(__name__)

_YAJL_OK = 0


#: The SONAME of yajl 2 (Debian package ``libyajl2``); yajl 1 has another API.
_YAJL_SONAME = "libyajl.so.2"


def _open_yajl2() -> tuple[Any, str] | None:
    """libyajl 2 and the name it was found by, or None."""
    for name in (_YAJL_SONAME, ctypes.util.find_library("yajl")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            version = int(lib.yajl_version())
        except (OSError, AttributeError):
            continue
        if version // 10000 == 2:
            return lib, name
    return None


@functools.cache
def _load_yajl() -> Any | None:
    """libyajl with its prototypes declared, or None."""
    found = _open_yajl2()
    if found is None:
        import ijson

        log.debug(
            "JSON validation: libyajl 2 not found (%s, find_library('yajl')); "
            "falling back to ijson's basic_parse_coro on its %s backend, about 10x slower "
            "(install libyajl2 for the fast path)",
            _YAJL_SONAME,
            ijson.backend,
        )
        return None
    lib, name = found
    lib.yajl_alloc.restype = ctypes.c_void_p
    lib.yajl_alloc.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.yajl_parse.restype = ctypes.c_int
    lib.yajl_parse.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    lib.yajl_complete_parse.restype = ctypes.c_int
    lib.yajl_complete_parse.argtypes = [ctypes.c_void_p]
    lib.yajl_get_error.restype = ctypes.c_void_p
    lib.yajl_get_error.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_size_t,
    ]
    lib.yajl_free_error.restype = None
    lib.yajl_free_error.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.yajl_get_bytes_consumed.restype = ctypes.c_size_t
    lib.yajl_get_bytes_consumed.argtypes = [ctypes.c_void_p]
    lib.yajl_free.restype = None
    lib.yajl_free.argtypes = [ctypes.c_void_p]
    log.debug("JSON validation: yajl through ctypes (%s)", name)
    return lib


def json_validator_name() -> str:
    """Which validator runs, for reports and benchmarks."""
    if _load_yajl() is not None:
        return "yajl (ctypes, no callbacks)"
    import ijson

    return f"ijson {ijson.backend} coroutine"


class YajlJsonInspector:
    """Strict JSON validation with yajl and no callbacks: nothing is built, nothing kept."""

    def __init__(self, name: str, lib: Any) -> None:
        self.name = name
        self._lib = lib
        self._handle: int | None = lib.yajl_alloc(None, None, None)
        if not self._handle:
            raise MemoryError("yajl_alloc failed")
        self._offset = 0
        self._finalizer = weakref.finalize(self, lib.yajl_free, self._handle)

    def feed(self, chunk: memoryview) -> None:
        if self._handle is None:
            return
        size = len(chunk)
        if chunk.readonly:
            buffer: Any = ctypes.create_string_buffer(bytes(chunk), size)
        else:
            buffer = (ctypes.c_char * size).from_buffer(chunk)
        if self._lib.yajl_parse(self._handle, buffer, size) != _YAJL_OK:
            self._fail(self._offset + self._lib.yajl_get_bytes_consumed(self._handle))
        self._offset += size

    def finish(self) -> None:
        if self._handle is None:
            return
        if self._lib.yajl_complete_parse(self._handle) != _YAJL_OK:
            self._fail(self._offset)
        self._close()

    def _fail(self, offset: int) -> None:
        raw = self._lib.yajl_get_error(self._handle, 0, None, 0)
        try:
            message = ctypes.string_at(raw).decode("utf-8", "replace").strip() if raw else ""
        finally:
            if raw:
                self._lib.yajl_free_error(self._handle, raw)
        self._close()
        raise SourceError(f"invalid JSON in '{self.name}': {_describe(message, offset)}")

    def _close(self) -> None:
        self._handle = None
        self._finalizer()


def _describe(message: str, offset: int) -> str:
    text = message.removeprefix("parse error:").strip() or "parse error"
    if "premature EOF" in text:
        return "empty or truncated (premature end of file)"
    if offset < 0:
        return text
    return f"{text} (near byte {offset})"


class IjsonInspector:
    """Fallback: ijson's push API (``basic_parse_coro``), events discarded per chunk."""

    def __init__(self, name: str) -> None:
        import ijson

        self.name = name
        self._events = ijson.sendable_list()
        self._coro = ijson.basic_parse_coro(self._events, use_float=True)

    def feed(self, chunk: memoryview) -> None:
        try:
            self._coro.send(bytes(chunk))
        except Exception as exc:
            raise SourceError(f"invalid JSON in '{self.name}': {_first_line(exc)}") from None
        self._events.clear()

    def finish(self) -> None:
        try:
            self._coro.close()
        except Exception as exc:
            raise SourceError(f"invalid JSON in '{self.name}': {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    text = exc.args[0] if exc.args else str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return _describe(str(text).splitlines()[0] if str(text) else "parse error", -1)


class CsvInspector:
    """A scenes CSV is sane when it is not empty and holds no NUL byte.

    NUL bytes are what a crash leaves in a file whose blocks were allocated
    but never written; CSV readers stop or fail on them.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._size = 0

    def feed(self, chunk: memoryview) -> None:
        if chunk.tobytes().find(b"\x00") >= 0:
            raise SourceError(f"invalid CSV in '{self.name}': contains NUL bytes")
        self._size += len(chunk)

    def finish(self) -> None:
        if self._size == 0:
            raise SourceError(f"invalid CSV in '{self.name}': the file is empty")


def _streaming(name: str) -> ContentInspector:
    lib = _load_yajl()
    if lib is not None:
        return YajlJsonInspector(name, lib)
    return IjsonInspector(name)


def json_inspector(name: str) -> ContentInspector:
    """The fastest strict JSON inspector available."""
    return _streaming(name)


def inspector_factory(kind: str, name: str) -> Callable[[], ContentInspector] | None:
    """Factory for the artifact ``kind`` (``tracking``, ``audio``, ``scenes``)."""
    if kind in ("tracking", "audio"):
        return functools.partial(json_inspector, name)
    if kind == "scenes":
        return functools.partial(CsvInspector, name)
    return None


def validate_file(path: Path, kind: str, chunk_size: int = 1 << 20) -> None:
    """Validate a local file the way the copy would (for files the copy skipped)."""
    factory = inspector_factory(kind, str(path))
    if factory is None:
        return
    inspector = factory()
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    try:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                inspector.feed(view[:n])
    except OSError as exc:
        raise SourceError(f"cannot read '{path}': {exc.strerror or exc}") from None
    inspector.finish()
