"""Streaming validation of analysis artifacts: every inspector, every kind of damage."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from finalcopy.engine import ContentInspector
from finalcopy.errors import SourceError
from finalcopy.finalize import artifacts
from finalcopy.finalize.artifacts import (
    CsvInspector,
    IjsonInspector,
    _load_yajl,
    json_validator_name,
    validate_file,
)


def _inspectors() -> dict[str, Callable[[], ContentInspector]]:
    out: dict[str, Callable[[], ContentInspector]] = {"ijson": lambda: IjsonInspector("f")}
    lib = _load_yajl()
    if lib is not None:
        out["yajl"] = lambda: artifacts.YajlJsonInspector("f", lib)
    return out


INSPECTORS = _inspectors()
VALID = [
    b'{"metadata":{"video_path":"test.mp4","total_frames":100},"frames":[]}\n',
    b"[]",
    b'"\xc3\xa9t\xc3\xa9"',
    b"  42  ",
]
INVALID = {
    "empty": b"",
    "blank": b" \n",
    "truncated": b'{"frames":[{"frame":1},',
    "corrupt": b'{"frames":[}',
    "nan": b'{"a":NaN}',
    "trailing": b'{"a":1} {"b":2}',
    "latin1": b'{"a":"\xe9"}',
    "nul": b'{"a":1}\x00',
}


def _feed(make: Callable[[], ContentInspector], data: bytes, chunk: int = 7) -> None:
    inspector = make()
    buffer = bytearray(data)
    view = memoryview(buffer)
    for start in range(0, len(data), chunk):
        inspector.feed(view[start : start + chunk])
    inspector.finish()


def test_the_fast_validators_are_available() -> None:
    assert "yajl" in INSPECTORS, "libyajl of ijson's C backend could not be loaded"
    assert "yajl" in json_validator_name()


@pytest.mark.parametrize("name", sorted(INSPECTORS))
@pytest.mark.parametrize("data", VALID)
def test_valid_json(name: str, data: bytes) -> None:
    _feed(INSPECTORS[name], data)


@pytest.mark.parametrize("name", sorted(INSPECTORS))
@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_json(name: str, case: str) -> None:
    with pytest.raises(SourceError, match="invalid JSON"):
        _feed(INSPECTORS[name], INVALID[case])


def test_big_document_streams_and_a_late_error_is_found() -> None:
    frames = ",".join(json.dumps({"frame": i, "objects": [i] * 5}) for i in range(300_000))
    data = ("[" + frames + "]").encode()
    for name, make in INSPECTORS.items():
        _feed(make, data, 65536)
        with pytest.raises(SourceError, match="truncated"):
            _feed(make, data[:-1], 65536)
        broken = data[: len(data) - 100] + b"}" + data[len(data) - 99 :]
        with pytest.raises(SourceError):
            _feed(make, broken, 65536)
        del name


def test_csv_sanity() -> None:
    _feed(lambda: CsvInspector("s.csv"), b"No,Timecode In\n1,00:00\n")
    with pytest.raises(SourceError, match="empty"):
        _feed(lambda: CsvInspector("s.csv"), b"")
    with pytest.raises(SourceError, match="NUL"):
        _feed(lambda: CsvInspector("s.csv"), b"No,a\n\x00\x00\x00")


def test_validate_file(tmp_path: Path) -> None:
    good = tmp_path / "a_tracking.json"
    good.write_bytes(b'{"frames":[]}')
    validate_file(good, "tracking")
    bad = tmp_path / "b_audio.json"
    bad.write_bytes(b'{"frames":[')
    with pytest.raises(SourceError):
        validate_file(bad, "audio")
    validate_file(bad, "video")  # not an artifact: nothing to check
