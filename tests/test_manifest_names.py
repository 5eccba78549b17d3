"""Manifests the standard checkers accept, for every name a POSIX file system can hold.

Issue 9, item 9: ``b3sum -c`` 1.x rejected a name holding a carriage return,
and ``b3sum -c`` / ``sha256sum -c`` read a file named ``-`` as standard input.
These tests copy trees of hostile names with the real CLI and run the real
checkers on the manifest, and treat every file finalcopy reads back
(manifest, state.jsonl, names.tsv) as untrusted input.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from finalcopy.engine import manifest, state, untrusted
from finalcopy.engine.manifest import format_manifest, parse_manifest
from finalcopy.engine.state import (
    StateRecord,
    format_names,
    format_state,
    parse_names,
    parse_state,
)
from finalcopy.engine.untrusted import MAX_LINE_BYTES
from finalcopy.hashing import ALGORITHMS, hash_path
from tests.support.cli import run_cli
from tests.support.fixtures import require_tool

CHECKERS = {"blake3": "b3sum", "sha256": "sha256sum", "xxh128": "xxh128sum"}

# -- hostile names ------------------------------------------------------------------

#: File names (one path component each) that have broken checksum tools.
HOSTILE_NAMES: list[bytes] = [
    b"-",  # read as standard input by b3sum -c and sha256sum -c
    b"--",
    b"-c",
    b"--help",
    b"stdin",  # read as standard input by xxh128sum -c
    b"-\r",
    b"cr\rmid",
    b"cr-end\r",  # b3sum 1.x has no \r escape; coreutils 9 strips a raw trailing CR
    b"\rcr-start",
    b"cr\r\r",
    b"lf\nmid",
    b"lf-end\n",
    b"\nlf-start",
    b"crlf\r\nmid",
    b"crlf-end\r\n",
    b"back\\slash",
    b"\\leading-backslash",
    b"trailing-backslash\\",
    b"\\",
    b"\\\\",
    b"\\n",
    b"\\r",
    b"\\x41 not an escape",
    b" leading space",
    b"trailing space ",
    b"  ",
    b"x  y (two spaces)",
    b"*star",
    b"*",
    b" *space-star",
    b"tab\there",
    b"\t",
    b"#hash",
    b": OK",
    b"name: FAILED",
    b"\x1b[31mred\x1b[0m",
    b"\x01\x02\x03\x7f",
    b"\xff",  # not UTF-8: os.fsdecode gives U+DCFF
    b"caf\xe9",
    b"\xc3\x28",
    b"mixed\xff\n\r\\",
    "\ufffd".encode(),
    "\ufffd\r".encode(),
    "été à Zürich ✓".encode(),
    "a\u2028b\u2029c\x85d".encode(),  # str.splitlines() breaks lines here
    "\ufeffbom".encode(),
    "\u202eevil\u202c".encode(),
    b"x" * 255,
    ("é" * 127).encode(),  # 254 bytes
]

#: Hostile folder names, each holding hostile file names.
HOSTILE_DIRS: list[bytes] = [b"-", b"dir\r", b"dir\nlf", b"dir\\bs", b"\xfedir", b"stdin", b" "]

#: A sample of the Big List of Naughty Strings (minimaxir/big-list-of-naughty-strings,
#: MIT), inline: names without "/" or NUL, which no POSIX file name can hold.
BLNS_SAMPLE: list[str] = [
    "undefined",
    "undef",
    "null",
    "NULL",
    "(null)",
    "nil",
    "NIL",
    "true",
    "None",
    "hasOwnProperty",
    "\\",
    "\\\\",
    "-$1.00",
    "0..0",
    "1#SNAN",
    "1'000'000,00",
    "\x01\x02\x03\x04\x05\x06\x07\x08\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19"
    "\x1a\x1b\x1c\x1d\x1e\x1f\x7f",
    "\x80\x81\x82\x83\x84\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94"
    "\x95\x96\x97\x98\x99\x9a\x9b\x9c\x9d\x9e\x9f",
    "\t\x0b\x0c \x85\xa0\u1680\u2002\u2003\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u200b\u2028\u2029\u202f\u205f\u3000",
    "\ufeff",
    "Ω≈ç√∫˜µ≤≥÷",
    "Œ„´‰ˇÁ¨ˆØ∏”’",
    '"',
    "'",
    "部落格",
    "ヽ༼ຈل͜ຈ༽ﾉ ヽ༼ຈل͜ຈ༽ﾉ",
    "(ﾉಥ益ಥ）ﾉ\ufeff ┻━┻",
    "👨\u200d👩\u200d👦 👨\u200d👩\u200d👧\u200d👦",
    "הָיְתָהtestالصفحات التّحول",
    "\u2029test\u2029",
    "\u2066test\u2067",
    "𝕋𝕙𝕖 𝕢𝕦𝕚𝕔𝕜 𝕓𝕣𝕠𝕨𝕟 𝕗𝕠𝕩",
    "Ṱ̺̺̕o͞ ̷i̲̬͇̪͙n̝̗͕v̟̜̘̦͟o̶̙̰̠kè͚̮̺̪̹̱̤",
    ";alert(123);",
    'ABC<div style="x\\x3Aexpression(javascript:alert(1)">DEF',
    'ABC<div style="x:\\x0Aexpression(javascript:alert(1)">DEF',
    'ABC<div style="x:\\x0Dexpression(javascript:alert(1)">DEF',
    "`\"'><img src=xxx:x \\x0Aonerror=javascript:alert(1)>",
    '<img src=x\\x09onerror="javascript:alert(1)">',
    "1;DROP TABLE users",
    "' OR '1'='1",
    "%s(un='%s') = %u",
    "%*.*s",
    "$HOME",
    "$ENV{'HOME'}",
    "Roses are \x1b[0;31mred\x1b[0m",
    "Scunthorpe General Hospital",
    "CON",
    "LPT1",
    "\u00ad",
    "ﷺ",
    "!@#$%^&*()`~",
    '<>?:"{}|_+',
]


def hostile_paths() -> list[bytes]:
    """Relative paths (bytes) of every file of the hostile tree."""
    paths = list(HOSTILE_NAMES)
    paths += [
        f"blns-{i:02d}-{s}".encode("utf-8", "surrogateescape") for i, s in enumerate(BLNS_SAMPLE)
    ]
    for folder in HOSTILE_DIRS:
        for name in (b"-", b"cr-end\r", b"stdin", b"\\", b"\xff", b"plain"):
            paths.append(b"d/" + folder + b"/" + name)
    return paths


def make_hostile_tree(root: Path) -> dict[str, bytes]:
    """Create the hostile tree under ``root``: relative path (as os.fsdecode gives it) → content."""
    out: dict[str, bytes] = {}
    base = os.fsencode(root)
    for rel in hostile_paths():
        assert len(rel.rsplit(b"/", 1)[-1]) <= 255
        full = base + b"/" + rel
        os.makedirs(os.path.dirname(full), exist_ok=True)
        content = b"content of " + rel  # distinct and never empty: stdin would not match
        with open(full, "wb") as f:
            f.write(content)
        out[os.fsdecode(rel)] = content
    return out


def b3sum_can_name(path: str) -> bool:
    """b3sum 1.x reads its check file as UTF-8 and refuses U+FFFD: nothing else names a file."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\ufffd" not in path


def xxh128sum_version() -> tuple[int, ...]:
    tool = require_tool("xxh128sum")
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"(\d+)\.(\d+)\.(\d+)", out.stdout + out.stderr)
    assert found, out
    return tuple(int(x) for x in found.groups())


def checkable(algorithm: str, paths: list[str]) -> list[str]:
    """The paths the real checker of ``algorithm`` can be given at all."""
    if algorithm == "blake3":
        return [p for p in paths if b3sum_can_name(p)]
    if algorithm == "xxh128" and xxh128sum_version() < (0, 8, 2):
        return [p for p in paths if "\n" not in p]  # 0.8.1 has no escaping at all
    return list(paths)


def run_checker(algorithm: str, dst: Path) -> subprocess.CompletedProcess[bytes]:
    tool = require_tool(CHECKERS[algorithm])
    return subprocess.run(
        [tool, "-c", f".finalcopy/manifest.{algorithm}"],
        cwd=dst,
        stdin=subprocess.DEVNULL,  # a name read as stdin would hash as empty: FAILED
        capture_output=True,
        timeout=120,
        check=False,
    )


def output_lines(result: subprocess.CompletedProcess[bytes]) -> list[bytes]:
    # Names with a line feed are printed escaped, so one line per manifest entry.
    return result.stdout.split(b"\n")[:-1]


def verify_json(dst: Path) -> tuple[int, dict[str, object]]:
    """``finalcopy verify DST --json``: exit code and summary (bytes: names may not be UTF-8)."""
    result = subprocess.run(
        [sys.executable, "-m", "finalcopy", "verify", os.fspath(dst), "--json"],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert b"Traceback" not in result.stdout + result.stderr, result.stderr
    summary = json.loads(result.stdout.split(b"\n")[-2].decode("utf-8", "surrogateescape"))
    assert summary["kind"] == "summary"
    return result.returncode, summary


def tamper(root: Path, paths: list[str]) -> None:
    for rel in paths:
        with open(os.fsencode(root) + b"/" + os.fsencode(rel), "ab") as f:
            f.write(b"!")


# -- the real checkers on a copy made by the real CLI ----------------------------------


@pytest.mark.parametrize("algorithm", ["blake3", "sha256"])
def test_real_checkers_accept_every_hostile_name(tmp_path: Path, algorithm: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree = make_hostile_tree(src)
    require_tool(CHECKERS[algorithm])
    result = run_cli("copy", src, dst, "--hash", algorithm)
    assert result.returncode == 0, result.stdout + result.stderr

    expected = checkable(algorithm, sorted(tree))
    checked = run_checker(algorithm, dst)
    lines = output_lines(checked)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stderr == b""
    assert all(line.endswith(b": OK") for line in lines), lines
    assert len(lines) == len(expected)

    # Every line names the real file (not standard input, not another file):
    # once every file changes, the checker fails every line.
    code, summary = verify_json(dst)
    assert code == 0 and summary["ok"] is True, summary
    assert summary["checked"] == len(tree)
    listed = parse_manifest((dst / f".finalcopy/manifest.{algorithm}").read_bytes())
    assert sorted(summary["unlisted"]) == sorted(set(tree) - set(listed))  # type: ignore[call-overload]
    tamper(dst, sorted(tree))
    failed = run_checker(algorithm, dst)
    assert failed.returncode != 0
    lines = output_lines(failed)
    assert len(lines) == len(expected)
    assert not any(line.endswith(b": OK") for line in lines), lines

    # finalcopy verify checks every file, the ones the checker cannot name included.
    code, summary = verify_json(dst)
    assert code == 1
    assert sorted(summary["changed"]) == sorted(tree)  # type: ignore[call-overload]


def test_xxh128sum_checks_what_it_can(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree = make_hostile_tree(src)
    result = run_cli("copy", src, dst, "--hash", "xxh128")
    assert result.returncode == 0, result.stdout + result.stderr
    expected = checkable("xxh128", sorted(tree))
    checked = run_checker("xxh128", dst)
    ok = [line for line in output_lines(checked) if line.endswith(b": OK")]
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert len(ok) == len(expected)
    assert not any(line.endswith(b": FAILED") for line in output_lines(checked))
    assert b"Could not open" not in checked.stdout
    code, summary = verify_json(dst)
    assert code == 0 and summary["checked"] == len(tree), summary


# -- format_manifest against the real checkers, names drawn at random ------------------

ALPHABET = [
    "a",
    "b",
    "-",
    "\\",
    "\n",
    "\r",
    "\t",
    " ",
    "*",
    "n",
    "r",
    "#",
    ".",
    ":",
    "é",
    "\ufffd",
    "\udcff",
    "\udc80",
    "\u2028",
    "\x85",
    "\x1b",
    "stdin",
    "OK",
]


def random_name(rng: random.Random) -> str:
    while True:
        name = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 8)))
        if name not in (".", "..") and len(os.fsencode(name)) <= 255:
            return name


def random_paths(rng: random.Random, count: int) -> list[str]:
    paths: set[str] = set()
    dirs: set[str] = set()
    while len(paths) < count:
        parts = [random_name(rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        path = "/".join(parts)
        prefixes = {"/".join(parts[:i]) for i in range(1, len(parts))}
        if path in dirs or prefixes & paths:
            continue  # a name cannot be a file and a folder at once
        paths.add(path)
        dirs |= prefixes
    return sorted(paths)


@pytest.mark.parametrize("algorithm", ["blake3", "sha256", "xxh128"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_names_check_with_the_real_tool(tmp_path: Path, algorithm: str, seed: int) -> None:
    rng = random.Random(seed)
    paths = random_paths(rng, 150)
    algo = ALGORITHMS[algorithm]
    digests: dict[str, str] = {}
    for rel in paths:
        full = tmp_path / rel
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(os.fsencode(rel) + b"\0")
        digests[rel] = hash_path(full, algo)
    (tmp_path / ".finalcopy").mkdir()
    data = manifest.format_manifest(digests, algorithm=algorithm)
    (tmp_path / f".finalcopy/manifest.{algorithm}").write_bytes(data)
    listed = [p for p in paths if manifest.checker_can_name(p, algorithm)]
    assert set(checkable(algorithm, paths)) <= set(listed)
    checked = run_checker(algorithm, tmp_path)
    lines = output_lines(checked)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    ok = [line for line in lines if line.endswith(b": OK")]
    assert len(ok) == len(checkable(algorithm, listed)), checked.stdout + checked.stderr
    if algorithm != "xxh128":
        assert checked.stderr == b"" and len(lines) == len(ok) == len(listed)
    assert parse_manifest(data) == {p: digests[p] for p in listed}


# -- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", [None, "blake3", "sha256", "xxh128"])
def test_format_then_parse_round_trips_every_listed_name(algorithm: str | None) -> None:
    rng = random.Random(f"round-trip-{algorithm}")
    for _ in range(30):
        paths = random_paths(rng, 60)
        paths += [os.fsdecode(p) for p in hostile_paths()]
        digests = {p: hashlib.sha256(os.fsencode(p)).hexdigest() for p in paths}
        if algorithm is None:
            data = format_manifest(digests)
            can = manifest.checker_can_name
            listed = {p: d for p, d in digests.items() if can(p, None)}
        else:
            data = manifest.format_manifest(digests, algorithm=algorithm)
            listed = {p: d for p, d in digests.items() if manifest.checker_can_name(p, algorithm)}
        parsed = manifest.read_manifest(data)
        assert parsed.problems == []
        assert parsed.entries == listed
        assert all(len(line) <= MAX_LINE_BYTES for line in data.split(b"\n"))


def test_what_each_checker_cannot_name() -> None:
    can = manifest.checker_can_name
    for algorithm in ("blake3", "sha256", "xxh128", None):
        for path in ("-", "stdin", "a\rb", "a\nb", "a\\b", "d\r/f"):
            assert can(path, algorithm), (path, algorithm)
    assert can("end\r", "blake3") and can("end\r", "sha256") and can("end\r", "xxh128")
    assert not can("\udcff", "blake3") and not can("\ufffd", "blake3")
    assert can("\udcff", "sha256") and can("\ufffd", "sha256")
    assert not can("x" * 4096, "sha256")  # longer than PATH_MAX: no checker can open it
    # Without the algorithm: only the names b3sum 1.x and sha256sum read alike.
    assert not can("end\r", None) and not can("\udcff", None)


def test_lines_are_what_the_tools_expect() -> None:
    d = "ab" * 32
    blake3 = manifest.format_manifest
    assert blake3({"-": d}, algorithm="blake3") == f"{d}  ./-\n".encode()
    assert blake3({"a\rb": d}, algorithm="blake3") == f"{d}  a\rb\n".encode()
    assert blake3({"end\r": d}, algorithm="blake3") == f"{d}  end\r\n".encode()
    assert blake3({"end\r": d}, algorithm="sha256") == f"\\{d}  end\\r\n".encode()
    assert blake3({"a\\b\n": d}, algorithm="sha256") == f"\\{d}  a\\\\b\\n\n".encode()
    assert blake3({"stdin": d[:32]}, algorithm="xxh128") == f"{d[:32]}  ./stdin\n".encode()
    assert blake3({"a\\b": d[:32]}, algorithm="xxh128") == f"{d[:32]}  a\\b\n".encode()


def test_state_round_trips_hostile_names() -> None:
    records = [
        StateRecord(os.fsdecode(p), i, -i, 10**18 + i, "blake3", f"{i:064x}")
        for i, p in enumerate(hostile_paths())
    ]
    parsed = parse_state(format_state(records))
    assert parsed == {r.path: r for r in records}


def test_names_round_trip_hostile_names() -> None:
    paths = [os.fsdecode(p) for p in hostile_paths()]
    renamed = {p: f"stored/{i}\t{p}" for i, p in enumerate(paths)}
    assert parse_names(format_names(renamed)) == renamed


# -- untrusted input ----------------------------------------------------------------------

DIGEST = "0123456789abcdef" * 4

BAD_MANIFEST_LINES: list[tuple[bytes, str]] = [
    (f"{DIGEST}  /etc/passwd".encode(), "absolute"),
    (f"{DIGEST}  ../outside".encode(), ".."),
    (f"{DIGEST}  a/../../outside".encode(), ".."),
    (f"{DIGEST}  a//b".encode(), "empty"),
    (f"{DIGEST}  a/".encode(), "empty"),
    (f"{DIGEST}  ./".encode(), "empty"),
    (f"{DIGEST}  .".encode(), "'.'"),
    (f"{DIGEST}  a/./b".encode(), "'.'"),
    (f"{DIGEST}  nul\0byte".encode(), "NUL"),
    (f"\\{DIGEST}  bad\\tescape".encode(), "escape"),
    (f"\\{DIGEST}  ends-with\\".encode(), "escape"),
    (f"\\{DIGEST}  ..\\n/x".encode(), ""),  # "..\n" is a legal name: accepted
    (b"abc  short-digest", "digest"),
    (b"zz" * 32 + b"  not-hex", "digest"),
    (f"{DIGEST}no-separator".encode(), "separator"),
    (f"{DIGEST}  ".encode(), "empty"),
    (b"SHA256 (tagged) = " + DIGEST.encode(), "digest"),
    (f" {DIGEST}  leading-space".encode(), "digest"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_MANIFEST_LINES)
def test_manifest_lines_outside_the_tree_are_refused(line: bytes, reason: str) -> None:
    good = f"{DIGEST}  good\n".encode()
    parsed = manifest.read_manifest(good + line + b"\n" + good.replace(b"good", b"also"))
    if not reason:
        assert parsed.problems == [] and len(parsed.entries) == 3
        return
    assert parsed.entries == {"good": DIGEST, "also": DIGEST}
    assert len(parsed.problems) == 1
    assert parsed.problems[0].startswith("line 2: ")
    assert reason.lower() in parsed.problems[0].lower(), parsed.problems
    assert parse_manifest(good + line) == {"good": DIGEST}


def test_manifest_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    long_line = f"{DIGEST}  ".encode() + b"x" * MAX_LINE_BYTES
    parsed = manifest.read_manifest(long_line + f"\n{DIGEST}  ok\n".encode())
    assert parsed.entries == {"ok": DIGEST}
    assert "line 1" in parsed.problems[0] and "long" in parsed.problems[0]
    monkeypatch.setattr(untrusted, "MAX_FILE_BYTES", 1000)
    parsed = manifest.read_manifest(f"{DIGEST}  ok\n".encode() * 100)
    assert parsed.entries == {} and "larger than" in parsed.problems[0]
    assert parse_state(b"{}\n" * 1000) == {}
    assert parse_names(b"original\tstored\n" + b"a\tb\n" * 1000) == {}


def test_manifest_duplicates_keep_the_first() -> None:
    data = f"{DIGEST}  ./-\n{'f' * 64}  -\n".encode()
    parsed = manifest.read_manifest(data)
    assert parsed.entries == {"-": DIGEST}
    assert "twice" in parsed.problems[0]


def state_line(**fields: object) -> bytes:
    record: dict[str, object] = {
        "path": "a",
        "size": 1,
        "source_mtime_ns": 2,
        "dest_mtime_ns": 3,
        "algorithm": "blake3",
        "digest": DIGEST,
    }
    record.update(fields)
    return json.dumps(record).encode() + b"\n"


BAD_STATE: list[bytes] = [
    state_line(path="/etc/passwd"),
    state_line(path="../x"),
    state_line(path="a/../../x"),
    state_line(path="a//b"),
    state_line(path=""),
    state_line(path="nul\0"),
    state_line(path="\ud800"),  # a lone surrogate no file name can hold
    state_line(path=["a"]),
    state_line(size=-1),
    state_line(size=True),
    state_line(size=1.5),
    state_line(size="1"),
    state_line(source_mtime_ns=None),
    state_line(digest="../../x"),
    state_line(digest=""),
    state_line(algorithm="x" * 100),
    state_line(extra=1),
    b'{"path": "a"}\n',
    b"[" * 100_000 + b"\n",  # json.loads: RecursionError
    b'{"path": "a", "size": ' + b"9" * 5000 + b"}\n",  # int too long to convert
    b"[]\n",
    b'"a"\n',
    b"\xff\xfe garbage\n",
    b'{"path": "a", "size": 1, "source_mtime_ns": 2, "dest_mtime_ns": 3, "algor\n',  # torn
]


@pytest.mark.parametrize("line", BAD_STATE, ids=range(len(BAD_STATE)))
def test_state_records_are_validated(line: bytes) -> None:
    good = state_line(path="good")
    parsed = state.read_state(good + line + state_line(path="also"))
    assert sorted(parsed.entries) == ["also", "good"]
    assert len(parsed.problems) == 1 and parsed.problems[0].startswith("line 2: ")


def test_a_torn_last_state_line_is_skipped() -> None:
    data = state_line(path="good") + state_line(path="torn")[:-20]
    parsed = state.read_state(data)
    assert list(parsed.entries) == ["good"]
    assert parsed.problems[0].startswith("line 2: not JSON")


BAD_NAMES: list[bytes] = [
    b"/etc/passwd\tstored",
    b"original\t/etc/passwd",
    b"../x\tstored",
    b"original\ta/../../x",
    b"a//b\tstored",
    b"no-tab",
    b"a\tb\tc",
    b"bad\\qescape\tstored",
    b"original\tends\\",
    b"nul\0\tstored",
]


@pytest.mark.parametrize("line", BAD_NAMES)
def test_names_lines_are_validated(line: bytes) -> None:
    data = b"original\tstored\ngood\tG\n" + line + b"\nalso\tA\n"
    parsed = state.read_names(data)
    assert parsed.entries == {"good": "G", "also": "A"}
    assert len(parsed.problems) == 1 and parsed.problems[0].startswith("line 3: ")


def test_names_without_header_are_refused() -> None:
    parsed = state.read_names(b"a\tb\n")
    assert parsed.entries == {} and "header" in parsed.problems[0]


def fuzz_inputs(seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    pieces = [
        b"\\",
        b"\n",
        b"\r",
        b"\0",
        b"/",
        b"..",
        b".",
        b"  ",
        b" *",
        b"\t",
        b"\xff",
        DIGEST.encode(),
        b"a",
        b'{"path": ',
        b'"',
        b"}",
        b"original\tstored\n",
        b"-",
    ]
    for _ in range(300):
        yield b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))


def assert_inside(path: str) -> None:
    assert path and not path.startswith("/") and "\0" not in path
    assert all(part not in ("", ".", "..") for part in path.split("/")), path


@pytest.mark.parametrize("seed", range(5))
def test_parsers_never_raise_and_never_leave_the_tree(seed: int) -> None:
    for data in fuzz_inputs(seed):
        for path, _digest in manifest.read_manifest(data).entries.items():
            assert_inside(path)
        for path in state.read_state(data).entries:
            assert_inside(path)
        for original, stored in state.read_names(data).entries.items():
            assert_inside(original)
            assert_inside(stored)


def test_verify_reports_a_hostile_manifest_without_leaving_the_tree(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    assert run_cli("copy", src, dst).returncode == 0
    (tmp_path / "outside").write_bytes(b"secret")
    path = dst / ".finalcopy/manifest.blake3"
    data = path.read_bytes()
    path.write_bytes(
        data + f"{DIGEST}  ../outside\n{DIGEST}  /etc/passwd\n\\{DIGEST}  x\\q\n".encode()
    )
    result = run_cli("verify", dst)
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert "manifest.blake3 line 2" in result.stdout
    assert "manifest.blake3 line 3" in result.stdout
    assert "manifest.blake3 line 4" in result.stdout
    assert "missing: ../outside" not in result.stdout
    assert "missing: /etc/passwd" not in result.stdout

    path.unlink()
    path.symlink_to(tmp_path / "outside")
    result = run_cli("verify", dst)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert "not a regular file" in result.stdout + result.stderr


def test_files_the_manifest_cannot_list_are_checked_from_the_state(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for name in (b"plain", b"\xff", "\ufffd".encode()):
        with open(os.fsencode(src) + b"/" + name, "wb") as f:
            f.write(name)
    assert run_cli("copy", src, dst).returncode == 0
    listed = parse_manifest((dst / ".finalcopy/manifest.blake3").read_bytes())
    assert "plain" in listed and "\udcff" not in listed and "\ufffd" not in listed
    code, summary = verify_json(dst)
    assert code == 0 and summary["checked"] == 3, summary
    assert sorted(summary["unlisted"]) == ["\udcff", "\ufffd"], summary  # type: ignore[call-overload]

    os.unlink(os.fsencode(dst) + b"/\xff")
    code, summary = verify_json(dst)
    assert code == 1 and summary["missing"] == ["\udcff"], summary

    (dst / ".finalcopy/state.jsonl").unlink()
    code, summary = verify_json(dst)
    assert code == 1
    assert "\ufffd" in summary["unexpected"]  # type: ignore[operator]
    assert "missing" in summary["errors"][".finalcopy/state.jsonl"]  # type: ignore[index]
