"""``--bwlimit``: parsing, the timetable, the token bucket, its accuracy on a real copy, the CLI.

The bucket is tested with an injected clock and sleep (no test sleeps for
it); the accuracy test copies for real and measures bytes per interval on the
engine's own clock, from its progress events.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from finalcopy.backends.local import LocalBackend
from finalcopy.cli.options import TransferOptions, parse_size
from finalcopy.engine import BytesProgress, CopyOptions, CopyReport, Event, copy_tree
from finalcopy.engine.bandwidth import (
    BandwidthLimiter,
    bwlimit_json,
    limiter_for,
    parse_bwlimit,
    parse_rate,
)
from finalcopy.engine.plan import scan
from finalcopy.engine.source import FileChunkSource, SourceOpener
from finalcopy.errors import UsageError
from finalcopy.finalize import Settings, finalize_sync
from finalcopy.hashing import get_algorithm
from tests.support.cli import run_cli
from tests.support.pipeline import project_files, settings_for
from tests.support.sftp import open_remote
from tests.support.sshd import SshServer
from tests.support.trees import make_tree

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


# -- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("10M", 10 * MiB),
        ("512K", 512 * KiB),
        ("512k", 512 * KiB),
        ("1048576", 1048576),
        ("1G", GiB),
        ("64KiB", 64 * KiB),
        (" 20M ", 20 * MiB),
        ("off", None),
        ("OFF", None),
        ("0", None),
        ("0M", None),
    ],
)
def test_a_rate_is_bytes_per_second_in_binary_units(text: str, rate: int | None) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["10M", "512K", "1048576", "1G", "64KiB", "3mb", "7"])
def test_a_rate_reads_as_the_cli_reads_every_size(text: str) -> None:
    assert parse_rate(text) == parse_size(text)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("bogus", "not a rate"),
        ("10X", "not a rate"),
        ("-1M", "not a rate"),
        ("", "not a rate"),
        ("1.5M", "not a rate"),
        ("64i", "not a rate"),  # a binary-unit suffix without its unit letter
        ("64ib", "not a rate"),
        ("08:00,10M 25:00,off", "'25:00' is not a time of day"),
        ("08:00,10M 19:60,off", "'19:60' is not a time of day"),
        ("8h,10M", "'8h' is not a time of day"),
        ("08:00,fast", "'fast' is not a rate"),
        ("08:00,10M 08:00,off", "08:00 appears twice"),
        ("08:00,10M,off", "not a timetable entry"),
        ("08:00", "not a rate"),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_the_option(text: str, why: str) -> None:
    with pytest.raises(UsageError, match="--bwlimit") as caught:
        parse_bwlimit(text)
    assert f"--bwlimit '{text}'" in str(caught.value)
    assert why in str(caught.value)


def test_the_option_named_is_the_one_given() -> None:
    with pytest.raises(UsageError, match=r"^FINALCOPY_BWLIMIT 'fast': not a rate"):
        parse_bwlimit("fast", "FINALCOPY_BWLIMIT")


def at(hhmm: str) -> int:
    """Minutes since midnight."""
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


@pytest.mark.parametrize(
    ("time_of_day", "rate"),
    [
        ("00:00", None),  # 19:00,off of the previous day
        ("07:59", None),
        ("08:00", 10 * MiB),
        ("12:30", 10 * MiB),
        ("18:59", 10 * MiB),
        ("19:00", None),
        ("23:59", None),
    ],
)
def test_the_timetable_entry_in_force_is_the_last_one_passed(
    time_of_day: str, rate: int | None
) -> None:
    schedule = parse_bwlimit("08:00,10M 19:00,off")
    assert schedule.rate_at(at(time_of_day)) == rate


def test_a_timetable_wraps_from_the_previous_day_in_any_order() -> None:
    schedule = parse_bwlimit("19:00,1M 08:00,10M 12:00,512K")
    assert [(slot.label, slot.rate) for slot in schedule.slots] == [
        ("08:00", 10 * MiB),
        ("12:00", 512 * KiB),
        ("19:00", 1 * MiB),
    ]
    assert schedule.rate_at(at("03:00")) == 1 * MiB
    assert schedule.rate_at(at("11:59")) == 10 * MiB
    assert schedule.rate_at(at("12:00")) == 512 * KiB
    assert parse_bwlimit("08:00,5M").rate_at(at("07:00")) == 5 * MiB  # one entry: all day


def test_a_plain_rate_is_a_one_entry_schedule() -> None:
    schedule = parse_bwlimit("10M")
    assert not schedule.timetable
    assert all(schedule.rate_at(m) == 10 * MiB for m in (0, 600, 1439))


@pytest.mark.parametrize("text", [None, "off", "0", "OFF", "00:00,off", "08:00,0 20:00,off"])
def test_no_limit_builds_no_limiter(text: str | None) -> None:
    assert limiter_for(text) is None
    assert bwlimit_json(limiter_for(text)) is None


def test_the_json_form_is_bytes_per_second_or_the_timetable() -> None:
    assert bwlimit_json(limiter_for("20M")) == 20 * MiB
    assert bwlimit_json(limiter_for("08:00,10M 19:00,off")) == [
        {"from": "08:00", "bytes_per_s": 10 * MiB},
        {"from": "19:00", "bytes_per_s": None},
    ]


# -- the bucket, on a fake clock ----------------------------------------------------------


class FakeTime:
    """A clock that only moves when someone sleeps; every nap is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.naps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.naps.append(seconds)
        self.now += seconds


def fake_limiter(text: str, fake: FakeTime, **kwargs: Any) -> BandwidthLimiter:
    return BandwidthLimiter(parse_bwlimit(text), clock=fake.clock, sleep=fake.sleep, **kwargs)


def test_the_bucket_lets_a_small_burst_through_then_paces_to_the_rate() -> None:
    fake = FakeTime()
    limiter = fake_limiter("1M", fake)
    burst = limiter.capacity()
    assert burst == pytest.approx(0.1 * MiB)  # ~0.1 s worth: honoured over short windows
    limiter.take(64 * KiB)
    assert fake.naps == []  # within the burst
    start = fake.now
    sent = 64 * KiB
    while sent < 10 * MiB:
        limiter.take(64 * KiB)
        sent += 64 * KiB
    elapsed = fake.now - start
    assert elapsed == pytest.approx((sent - burst) / MiB, rel=1e-6)


def test_the_burst_is_at_least_one_chunk() -> None:
    fake = FakeTime()
    assert fake_limiter("10K", fake).capacity() == 64 * KiB
    assert fake_limiter("100M", fake).capacity() == pytest.approx(10 * MiB)


def test_reads_are_no_larger_than_the_burst_when_limited(tmp_path: Path) -> None:
    fake = FakeTime()
    wall = [datetime(2026, 12, 1, 12, 0)]
    limiter = fake_limiter("08:00,1M 19:00,off", fake, wall=lambda: wall[0])
    assert limiter.block(MiB) == int(0.1 * MiB)
    assert limiter.block(1000) == 1000
    src = make_tree(tmp_path / "src", {"a": os.urandom(MiB)})
    source = FileChunkSource(
        src / "a", MiB, get_algorithm("blake3"), 64 * KiB, threading.Event(), limiter=limiter
    )
    assert len(source.read_block(MiB)) == int(0.1 * MiB)  # the local backend's 1 MiB blocks
    wall[0] = datetime(2026, 12, 1, 20, 0)
    fake.now += 1.0
    assert limiter.block(MiB) == MiB  # off for now: read as usual


def test_idle_time_refills_no_more_than_the_burst() -> None:
    fake = FakeTime()
    limiter = fake_limiter("1M", fake)
    limiter.take(5 * MiB)  # pays its debt: ~4.9 s
    fake.now += 3600  # an hour idle
    fake.naps.clear()
    limiter.take(int(limiter.capacity()))
    assert fake.naps == []
    limiter.take(MiB)
    assert sum(fake.naps) == pytest.approx(1.0, rel=1e-6)


def test_a_debt_larger_than_the_burst_is_paid_in_short_naps() -> None:
    fake = FakeTime()
    limiter = fake_limiter("1M", fake)
    limiter.take(int(limiter.capacity()) + 3 * MiB)  # one large read (SFTP's read_many)
    assert sum(fake.naps) == pytest.approx(3.0, rel=1e-6)
    assert max(fake.naps) <= 0.25


def test_cancel_ends_a_wait_at_the_next_nap() -> None:
    fake = FakeTime()
    cancel = threading.Event()

    def sleep(seconds: float) -> None:
        fake.sleep(seconds)
        cancel.set()

    limiter = BandwidthLimiter(parse_bwlimit("1K"), clock=fake.clock, sleep=sleep)
    limiter.take(10 * MiB, cancel)  # hours of debt
    assert len(fake.naps) == 1


def test_the_timetable_is_followed_as_the_day_goes() -> None:
    fake = FakeTime()
    wall = [datetime(2026, 12, 1, 7, 59, 30)]
    limiter = fake_limiter("08:00,1M 19:00,off", fake, wall=lambda: wall[0])
    assert limiter.rate() is None
    limiter.take(100 * MiB)
    assert fake.naps == []  # off before 08:00: no wait at all
    wall[0] = datetime(2026, 12, 1, 8, 0, 1)
    fake.now += 1.0  # the wall clock is read at most once a second
    assert limiter.rate() == MiB
    limiter.take(int(limiter.capacity()) + MiB)
    assert sum(fake.naps) == pytest.approx(1.0, rel=1e-6)


def test_a_wait_ends_when_the_timetable_lifts_the_limit() -> None:
    fake = FakeTime()
    wall = [datetime(2026, 12, 1, 18, 59, 58)]

    def sleep(seconds: float) -> None:
        fake.sleep(seconds)
        wall[0] = datetime(2026, 12, 1, 19, 0, int(fake.now - 1000) % 60)

    limiter = BandwidthLimiter(
        parse_bwlimit("08:00,10K 19:00,off"), clock=fake.clock, sleep=sleep, wall=lambda: wall[0]
    )
    limiter.take(64 * KiB + MiB)  # 100 s of debt at 10K, at 18:59:58
    assert 1.0 <= fake.now - 1000 <= 1.25  # waited until 19:00 was seen, not 100 s


def test_the_bucket_is_one_for_every_thread() -> None:
    fake = FakeTime()
    lock = threading.Lock()
    limiter = BandwidthLimiter(parse_bwlimit("1M"), clock=fake.clock, sleep=fake.sleep)
    burst = limiter.capacity()

    def take() -> None:
        for _ in range(16):
            with lock:  # the fake clock is not thread-safe; the bucket's lock is under test
                limiter.take(64 * KiB)

    threads = [threading.Thread(target=take) for _ in range(4)]
    start = fake.now
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 4 × 16 × 64 KiB = 4 MiB through one bucket: 4 MiB at 1 MiB/s, not 1 MiB at 4.
    assert fake.now - start == pytest.approx((4 * MiB - burst) / MiB, rel=1e-6)


# -- what counts: bytes sent, not bytes hashed --------------------------------------------


class CountingLimiter(BandwidthLimiter):
    """A limiter that never waits and counts what it was asked for."""

    def __init__(self) -> None:
        super().__init__(parse_bwlimit("1G"))
        self.taken = 0
        self.lock = threading.Lock()

    def take(self, n: int, cancel: threading.Event | None = None) -> None:
        with self.lock:
            self.taken += n


def test_only_bytes_sent_are_throttled_not_hashes_or_resume_prefixes(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": os.urandom(300 * KiB)})
    plan = scan(src)
    (planned,) = plan.files
    limiter = CountingLimiter()
    opener = SourceOpener(
        plan.source_prefix, get_algorithm("blake3"), 64 * KiB, threading.Event(), None, limiter
    )
    opener.digest(planned)  # --checksum / proof: hashing the source, not sending it
    assert limiter.taken == 0
    source = opener.open(planned)
    source.consume_prefix(100 * KiB, get_algorithm("blake3"))  # resume: compared, not sent
    assert limiter.taken == 0
    while source.read_chunk():
        pass
    assert limiter.taken == 200 * KiB
    source = opener.open(planned)
    while len(source.read_many(4)) == 4:
        pass
    assert limiter.taken == 500 * KiB


def test_with_no_limit_the_read_path_never_sees_a_limiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the limiter was reached with no --bwlimit")

    monkeypatch.setattr(BandwidthLimiter, "__init__", forbidden)
    monkeypatch.setattr(BandwidthLimiter, "take", forbidden)
    sources: list[FileChunkSource] = []
    real_open = SourceOpener.open

    def spy(self: SourceOpener, f: Any) -> FileChunkSource:
        sources.append(real_open(self, f))
        return sources[-1]

    monkeypatch.setattr(SourceOpener, "open", spy)
    src = make_tree(tmp_path / "src", {f"f{i}": os.urandom(2 * MiB) for i in range(2)})
    assert TransferOptions().copy_options(4).bwlimit is None
    report = anyio.run(copy_tree, src, LocalBackend(tmp_path / "dst"), CopyOptions())
    assert report.ok and report.copied == 2
    assert len(sources) == 2 and all(s.limiter is None for s in sources)
    assert Settings.resolve({"work_dir": tmp_path}, env={}).copy.bwlimit is None


def test_a_command_makes_one_limiter_however_many_copies_it_starts() -> None:
    first = TransferOptions(bwlimit="7M").copy_options(4).bwlimit
    assert first is not None and bwlimit_json(first) == 7 * MiB
    # bench turns its options into the engine's once per setting: still one bucket.
    again = replace(TransferOptions(bwlimit="7M"), chunk_size="1M").copy_options(1)
    assert again.bwlimit is first


def test_the_run_shares_one_limiter_between_archives_and_copies(tmp_path: Path) -> None:
    work = tmp_path / "projets_extraits"
    for name in ("p1", "p2"):
        make_tree(work / name, project_files(name, video_size=200 * KiB))
    limiter = CountingLimiter()
    settings = settings_for(tmp_path, work, copy=CopyOptions(jobs=2, bwlimit=limiter))
    report = finalize_sync(settings)
    assert report.exit_code == 0, report.to_dict()
    assert report.to_dict()["bwlimit"] == 1 * GiB

    def content_bytes(root: Path) -> int:
        return sum(
            p.stat().st_size
            for p in root.rglob("*")
            if p.is_file() and ".finalcopy" not in p.relative_to(root).parts
        )

    archived, copied = content_bytes(tmp_path / "archives"), content_bytes(tmp_path / "out")
    assert archived > 0 and copied > 400 * KiB
    assert limiter.taken == archived + copied


# -- accuracy on a real copy --------------------------------------------------------------


def test_a_real_copy_keeps_to_the_limit_whatever_the_jobs(tmp_path: Path) -> None:
    rate = 2 * MiB
    src = make_tree(tmp_path / "src", {f"v{i}.bin": os.urandom(1 * MiB) for i in range(6)})
    clock = time.monotonic  # the engine's clock, shared by the limiter and the sink
    limiter = BandwidthLimiter(parse_bwlimit("2M"), clock=clock)
    samples: list[tuple[float, int]] = []

    def sink(event: Event) -> None:
        if isinstance(event, BytesProgress):
            samples.append((clock(), event.done))

    options = CopyOptions(jobs=4, bwlimit=limiter, verify="size")
    report = anyio.run(
        lambda: copy_tree(src, LocalBackend(tmp_path / "dst"), options, events=sink, clock=clock)
    )
    assert report.ok and report.bytes_copied == 6 * MiB
    burst = limiter.capacity()
    measured = [(t, done) for t, done in samples if done >= burst]
    end = next(i for i, (_, done) in enumerate(measured) if done == 6 * MiB)
    measured = measured[: end + 1]
    assert len(measured) >= 10, samples  # a limited copy takes seconds, sampled every 0.1 s
    (t0, d0), (t1, d1) = measured[0], measured[-1]
    overall = (d1 - d0) / (t1 - t0)
    assert overall == pytest.approx(rate, rel=0.15), overall / MiB
    # And over each second of the copy, not only on average.
    for i, (ta, da) in enumerate(measured):
        later = [(tb, db) for tb, db in measured[i:] if tb - ta >= 1.0]
        if later:
            tb, db = later[0]
            assert (db - da) / (tb - ta) == pytest.approx(rate, rel=0.15), (ta - t0, db - da)
    assert report.duration == pytest.approx((6 * MiB - burst) / rate, rel=0.15)


async def _sftp_copy(
    server: SshServer, tmp_path: Path, src: Path, options: CopyOptions, dest: str
) -> CopyReport:
    async with await open_remote(server, tmp_path, tmp_path / "remote") as backend:
        return await copy_tree(src, backend, options, dest=dest)


def test_the_sftp_uploader_is_charged_and_paced_too(sshd_server: SshServer, tmp_path: Path) -> None:
    # Small files (preloaded by the uploader) and large ones (streamed in 16-chunk batches).
    files = {f"s{i}": os.urandom(40 * KiB) for i in range(20)}
    files |= {f"v{i}.bin": os.urandom(2 * MiB) for i in range(2)}
    src = make_tree(tmp_path / "src", files)
    total = sum(len(b) for b in files.values())
    counting = CountingLimiter()
    options = CopyOptions(bwlimit=counting)
    report = anyio.run(_sftp_copy, sshd_server, tmp_path, src, options, "counted")
    assert report.ok, report.failed
    assert counting.taken == total
    limiter = BandwidthLimiter(parse_bwlimit("2M"))
    options = CopyOptions(jobs=4, bwlimit=limiter, verify="size")
    report = anyio.run(_sftp_copy, sshd_server, tmp_path, src, options, "paced")
    assert report.ok, report.failed
    rate = (total - limiter.capacity()) / report.duration
    assert 0.7 * 2 * MiB < rate <= 1.1 * 2 * MiB, rate / MiB


# -- the command line ---------------------------------------------------------------------


def small_source(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src", {"a.bin": os.urandom(256 * KiB), "b.txt": b"b"})


def test_copy_with_bwlimit_shows_it_in_header_summary_and_json(tmp_path: Path) -> None:
    src = small_source(tmp_path)
    plain = run_cli("copy", src, tmp_path / "d1", "--bwlimit", "5M", "--stats", "0")
    assert plain.returncode == 0, plain.stderr
    assert "bandwidth limit: 5.0 MiB/s" in plain.stderr  # the header, with the plan
    assert "bwlimit=5.0 MiB/s" in plain.stdout.splitlines()[0]  # the summary
    as_json = run_cli("copy", src, tmp_path / "d2", "--bwlimit", "5M", "--json")
    assert as_json.returncode == 0, as_json.stderr
    summary = json.loads(as_json.stdout.splitlines()[-1])
    assert summary["kind"] == "summary" and summary["bwlimit"] == 5 * MiB
    live = run_cli("copy", src, tmp_path / "d3", "-P", FINALCOPY_BWLIMIT="08:00,5M 19:00,off")
    assert live.returncode == 0, live.stderr
    assert "bandwidth limit: 5.0 MiB/s from 08:00, off from 19:00" in live.stderr


def test_copy_without_bwlimit_says_null_and_nothing_else(tmp_path: Path) -> None:
    src = small_source(tmp_path)
    result = run_cli("copy", src, tmp_path / "d", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["bwlimit"] is None
    plain = run_cli("copy", src, tmp_path / "d2", "--bwlimit", "off")
    assert plain.returncode == 0, plain.stderr
    assert "bwlimit=" not in plain.stdout.splitlines()[0]
    assert "bandwidth limit" not in plain.stderr


@pytest.mark.parametrize("command", ["copy", "run"])
def test_a_bad_limit_is_a_usage_error_from_option_or_environment(
    tmp_path: Path, command: str
) -> None:
    src = small_source(tmp_path)
    args: list[str | Path] = (
        [command, src, tmp_path / "dst"] if command == "copy" else [command, src, "--dry-run"]
    )
    from_env = run_cli(*args, FINALCOPY_BWLIMIT="bogus")
    assert from_env.returncode == 2, from_env.stderr
    assert from_env.stderr.startswith(
        "finalcopy: error: --bwlimit (from FINALCOPY_BWLIMIT) 'bogus': not a rate"
    ), from_env.stderr
    typed = run_cli(*args, "--bwlimit", "10X")
    assert typed.returncode == 2, typed.stderr
    assert typed.stderr.startswith("finalcopy: error: --bwlimit '10X': not a rate")
    assert not (tmp_path / "dst").exists()


def test_run_takes_bwlimit_from_option_then_environment(tmp_path: Path) -> None:
    def run(name: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        work = make_tree(tmp_path / name / "projets_extraits" / "p", project_files("p")).parent
        out = tmp_path / name / "out"
        out.mkdir()
        result = run_cli("run", work, "--output-dir", out, "--json", *args, env=env)
        assert result.returncode == 0, result.stderr
        report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
        on_disk = json.loads(Path(report["log_file"]).with_suffix(".json").read_text())
        assert on_disk["bwlimit"] == report["bwlimit"]
        return report

    assert run("typed", "--bwlimit", "20M")["bwlimit"] == 20 * MiB
    assert run("env", env={"FINALCOPY_BWLIMIT": "1M"})["bwlimit"] == 1 * MiB
    assert run("both", "--bwlimit", "off", env={"FINALCOPY_BWLIMIT": "1M"})["bwlimit"] is None
    plain = run_cli("run", tmp_path / "typed" / "projets_extraits", "--bwlimit", "20M")
    assert "bwlimit=20.0 MiB/s" in plain.stdout


def test_settings_read_bwlimit_from_options_then_environment(tmp_path: Path) -> None:
    def limit(options: dict[str, Any], env: dict[str, str]) -> object:
        settings = Settings.resolve({"work_dir": tmp_path, **options}, env=env)
        return bwlimit_json(settings.copy.bwlimit)

    assert limit({}, {"FINALCOPY_BWLIMIT": "10M"}) == 10 * MiB
    assert limit({"bwlimit": "512K"}, {"FINALCOPY_BWLIMIT": "10M"}) == 512 * KiB
    assert limit({"bwlimit": "off"}, {"FINALCOPY_BWLIMIT": "10M"}) is None
    shared = limiter_for("3M")
    settings = Settings.resolve({"work_dir": tmp_path, "bwlimit": shared}, env={})
    assert settings.copy.bwlimit is shared
    with pytest.raises(UsageError, match=r"^FINALCOPY_BWLIMIT 'bogus': not a rate"):
        Settings.resolve({"work_dir": tmp_path}, env={"FINALCOPY_BWLIMIT": "bogus"})
