"""Helper processes sending batches of small files: complete copies, and what each failure leaves.

Helpers are forked by a process that has one thread, so each scenario runs
in a fresh interpreter (``_scenario``): the test process itself runs
threads (anyio's, pytest's plugins').
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from finalcopy.backends.base import FileTransfer
from finalcopy.backends.helpers import Helpers
from finalcopy.cpus import cores
from finalcopy.engine import CopyOptions, copy_tree
from finalcopy.engine.source import FileChunkSource
from finalcopy.errors import SourceError
from finalcopy.hashing import Algorithm, get_algorithm
from tests.support import sftp
from tests.support.sshd import SshServer
from tests.support.trees import make_tree, tree_content

BLAKE3 = get_algorithm("blake3")
#: Enough small files for several batches (64 files each) while the first one is sent.
FILES = {f"d{i % 7}/f{i:04d}.bin": i.to_bytes(4, "big") * 256 for i in range(1500)}

_PRELUDE = """
import json, os, signal, sys, threading
from pathlib import Path
import anyio
from finalcopy.backends.local import LocalBackend
from finalcopy.backends.helpers import Helpers, helpers_cpu_seconds
from finalcopy.engine import CopyOptions, copy_tree

src, dst, memory = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "memory"
helpers = Helpers.fork(1)
assert helpers is not None, "a single-threaded process forks its helpers"
backend = LocalBackend(dst, drop_cache=not memory, helpers=helpers)
cancel = threading.Event()
options = CopyOptions()

def finish(report, **extra):
    helpers.close()
    print(json.dumps({"ok": report.ok, "copied": report.copied, "failed": report.failed,
                      "interrupted": report.interrupted, "sent": helpers.sent,
                      "helpers_cpu": helpers_cpu_seconds(), **extra}))
"""


def _interpret(script: str, *args: str) -> tuple[dict[str, Any], str]:
    """Run ``script`` with ``args`` in a fresh interpreter: its last line (JSON), its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result, done.stderr


def _scenario(body: str, src: Path, dst: Path, memory: bool = True) -> dict[str, Any]:
    """Run ``body`` after :data:`_PRELUDE` in a fresh interpreter; its JSON line."""
    script = _PRELUDE + textwrap.dedent(body)
    return _interpret(script, str(src), str(dst), "memory" if memory else "disk")[0]


def _over_sftp(
    script: str, server: SshServer, tmp_path: Path, src: Path, remote: Path, *args: str
) -> tuple[dict[str, Any], str]:
    """:func:`_interpret` ``script`` with the source, the URL of ``remote`` on ``server`` and
    the pickled options to reach it (then ``args``)."""
    options = pickle.dumps(sftp.options(server, tmp_path)).hex()
    return _interpret(script, str(src), sftp.url(server, remote), options, *args)


def _temporary_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".fc-")]


@pytest.mark.parametrize("memory", [True, False], ids=["memory", "disk"])
def test_a_copy_with_a_helper_is_complete_and_the_helper_sent_part_of_it(
    tmp_path: Path, memory: bool
) -> None:
    src, dst = make_tree(tmp_path / "src", FILES), tmp_path / "dst"
    result = _scenario(
        "finish(anyio.run(copy_tree, src, backend, options))", src, dst, memory=memory
    )
    assert result["ok"] and result["copied"] == len(FILES)
    assert result["sent"] > 0  # without helpers (or never idle) this is 0
    assert result["helpers_cpu"] > 0  # what bench adds to the copy's CPU
    assert tree_content(dst) == FILES and not _temporary_files(dst)


def test_sources_that_must_be_read_here_never_go_to_a_helper(tmp_path: Path) -> None:
    """Content inspectors and the pipeline's proofs live in this process."""
    src, dst = make_tree(tmp_path / "src", FILES), tmp_path / "dst"
    body = """
    class Inspector:
        def feed(self, chunk): pass
        def finish(self): pass
    for options in (CopyOptions(inspectors=lambda rel: Inspector), CopyOptions(keep_proofs=True)):
        report = anyio.run(copy_tree, src, backend, CopyOptions(checksum=True, **{
            k: getattr(options, k) for k in ("inspectors", "keep_proofs")}))
        assert report.ok, report.failed
    finish(report)
    """
    result = _scenario(body, src, dst)
    assert result["ok"] and result["sent"] == 0


def test_a_helper_killed_fails_its_batch_alone_and_a_rerun_completes(tmp_path: Path) -> None:
    src, dst = make_tree(tmp_path / "src", FILES), tmp_path / "dst"
    body = """
    from finalcopy.backends import helpers as module
    send = module.Helpers.send
    killed = []
    async def send_then_kill(self, *args):
        await send(self, *args)
        if not killed:  # the helper waits for its next batch: kill it there
            killed.append(os.kill(self.pids[0], signal.SIGKILL))
            os.waitid(os.P_PID, self.pids[0], os.WEXITED | os.WNOWAIT)
    module.Helpers.send = send_then_kill
    finish(anyio.run(copy_tree, src, backend, options))
    """
    result = _scenario(body, src, dst)
    failed = result["failed"]
    assert not result["ok"] and 0 < len(failed) <= 64 and result["sent"] == 1
    assert all("helper process" in message for message in failed.values())
    copied = tree_content(dst)
    assert all(FILES[rel] == data for rel, data in copied.items())  # nothing half-written
    assert set(copied) == set(FILES) - set(failed) and not _temporary_files(dst)
    rerun = _scenario("finish(anyio.run(copy_tree, src, backend, options))", src, dst)
    assert rerun["ok"] and tree_content(dst) == FILES


def test_an_interrupted_copy_stops_its_helpers_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    src, dst = make_tree(tmp_path / "src", FILES), tmp_path / "dst"
    body = """
    from finalcopy.backends import helpers as module
    send = module.Helpers.send
    async def send_then_stop(self, *args):
        cancel.set()  # as Ctrl-C would: the helper is told, and stops or finishes its batch
        await send(self, *args)
    module.Helpers.send = send_then_stop
    async def main():
        return await copy_tree(src, backend, options, cancel=cancel)
    finish(anyio.run(main))
    """
    result = _scenario(body, src, dst)
    assert result["interrupted"] and result["sent"] >= 1
    assert not _temporary_files(dst)
    copied = tree_content(dst)
    assert len(copied) < len(FILES) and all(FILES[r] == d for r, d in copied.items())
    rerun = _scenario("finish(anyio.run(copy_tree, src, backend, options))", src, dst)
    assert rerun["ok"] and tree_content(dst) == FILES


def test_helpers_die_with_their_parent_even_in_the_middle_of_a_batch(tmp_path: Path) -> None:
    """A kill -9 of the command stops its helpers too: nothing writes on after it.

    (An idle helper would also end, at the end of its pipe; a busy one only dies
    with its parent because the kernel kills it.)"""
    body = """
    from finalcopy.hashing import Algorithm, get_algorithm
    from tests.test_helpers import sleep_a_minute
    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(helpers.send, sleep_a_minute, [], get_algorithm("blake3"))
            await anyio.sleep(0.5)
            print(json.dumps({"pids": helpers.pids}), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    anyio.run(main)
    """
    script = _PRELUDE + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), str(tmp_path / "dst"), "memory"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL
    (pid,) = json.loads(done.stdout.splitlines()[-1])["pids"]
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def sleep_a_minute(transfers: list[FileTransfer], algorithm: Algorithm) -> None:
    """A batch a helper is busy with (imported there when it unpickles its request)."""
    time.sleep(60)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_process_with_threads_forks_no_helper() -> None:
    """Forking would copy locks other threads may hold; the copy then runs without helpers."""
    stop = threading.Event()
    waiter = threading.Thread(target=stop.wait)
    waiter.start()
    try:
        assert Helpers.fork(1) is None
    finally:
        stop.set()
        waiter.join()


def test_a_source_goes_to_another_process_unread_and_comes_back_read(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100_000)
    mine = FileChunkSource(path, 100_000, BLAKE3, 65536, threading.Event())
    assert mine.portable
    theirs = pickle.loads(pickle.dumps(mine))
    while theirs.read_block(1 << 20):
        pass
    mine.adopt(theirs.outcome())
    assert mine.done == 100_000 and mine.digest() == _blake3(b"x" * 100_000)
    # Sent a second time by mistake, it must not read as an empty file (an empty copy
    # would replace the good one): it refuses before a byte is written.
    with pytest.raises(SourceError, match="already sent"):
        mine.read_block(1 << 20)


def test_a_source_being_read_or_watched_here_stays_here(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 300_000)
    reading = FileChunkSource(path, 300_000, BLAKE3, 65536, threading.Event())
    reading.read_block(65536)
    assert not reading.portable
    with pytest.raises(TypeError, match="being read"):
        pickle.dumps(reading)
    reading.close()
    kept = FileChunkSource(path, 300_000, BLAKE3, 65536, threading.Event(), keep_seen=True)
    assert not kept.portable


def _blake3(data: bytes) -> str:
    hasher = BLAKE3.new()
    hasher.update(data)
    return hasher.hexdigest()


@pytest.mark.parametrize("jobs", [4, 1])
def test_the_command_forks_a_helper_per_cpu_but_one_for_a_local_destination(
    tmp_path: Path, jobs: int
) -> None:
    """At most one per CPU but the command's own, and none with one job: one batch at a time."""
    src = make_tree(tmp_path / "src", FILES)
    command = [sys.executable, "-m", "finalcopy", "copy", "-vv", "-j", str(jobs)]
    done = subprocess.run(
        [*command, str(src), str(tmp_path / "dst")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    sent = [line for line in done.stderr.splitlines() if "helper processes sent" in line]
    if min(cores(), jobs) > 1:
        assert len(sent) == 1 and " 0 batch" not in sent[0]
    else:
        assert sent == []  # the command's own thread sends every batch
    assert tree_content(tmp_path / "dst") == FILES


_SFTP_SCENARIO = """
import json, os, pickle, signal, sys
from pathlib import Path
import anyio
from finalcopy.backends import open_backend
from finalcopy.backends.helpers import Helpers
from finalcopy.engine import CopyOptions, copy_tree

src, url, kill = Path(sys.argv[1]), sys.argv[2], sys.argv[4]
options = pickle.loads(bytes.fromhex(sys.argv[3]))
helpers = Helpers.fork(1)
assert helpers is not None
from dataclasses import replace
options = replace(options, helpers=helpers)
if kill == "kill":  # the helper dies in the middle of its first batch
    from finalcopy.backends import helpers as module
    call = module._Helper.call
    def call_then_kill(self, *args):
        import threading
        threading.Timer(0.3, os.kill, (self.pid, signal.SIGKILL)).start()
        return call(self, *args)
    module._Helper.call = call_then_kill

async def main():
    backend = await open_backend(url, options)
    if kill.startswith("listener:"):  # no new connection from now on: the helper has none
        os.kill(int(kill.split(":")[1]), signal.SIGTERM)
        await anyio.sleep(0.5)
    async with backend:
        return await copy_tree(src, backend, CopyOptions())

report = anyio.run(main)
helpers.close()
print(json.dumps({"ok": report.ok, "failed": report.failed, "sent": helpers.sent}))
"""


@pytest.mark.parametrize("kill", ["", "kill"], ids=["complete", "helper-killed"])
def test_over_sftp_a_helper_sends_over_its_own_connection(
    sshd_server: SshServer, tmp_path: Path, kill: str
) -> None:
    """Large files go to a helper too; one killed mid-file fails that file alone, and the
    re-run (no helper) resumes or rewrites its partial temporary file."""
    files = {f"v{i}.bin": os.urandom(1 << 20) * 6 for i in range(4)}  # 6 MiB each
    files.update({f"s/f{i:03d}.txt": b"%d\n" % i for i in range(200)})
    src = make_tree(tmp_path / "src", files)
    remote = tmp_path / "remote"
    result, _ = _over_sftp(_SFTP_SCENARIO, sshd_server, tmp_path, src, remote, kill)
    if not kill:
        assert result["ok"] and result["sent"] > 0
        assert tree_content(remote) == files
        return
    assert not result["ok"] and 0 < len(result["failed"]) <= 64
    assert all("helper process" in why for why in result["failed"].values())
    assert all(files[rel] == data for rel, data in tree_content(remote).items())

    async def rerun() -> bool:
        async with await sftp.open_remote(sshd_server, tmp_path, remote) as backend:
            return (await copy_tree(src, backend, CopyOptions())).ok

    assert anyio.run(rerun)
    assert tree_content(remote) == files
    assert not _temporary_files(remote)


def test_over_sftp_a_helper_that_cannot_connect_leaves_its_share_to_the_command(
    sshd_server_fresh: SshServer, tmp_path: Path
) -> None:
    """A server that takes no second connection: the copy completes over the first."""
    files = {f"v{i}.bin": os.urandom(1 << 20) * 3 for i in range(4)}
    files.update({f"s/f{i:03d}.txt": b"%d\n" % i for i in range(200)})
    src = make_tree(tmp_path / "src", files)
    remote = tmp_path / "remote"
    listener = f"listener:{sshd_server_fresh.pid}"
    result, stderr = _over_sftp(_SFTP_SCENARIO, sshd_server_fresh, tmp_path, src, remote, listener)
    assert result["ok"] and result["sent"] == 0, result["failed"]
    assert "cannot connect" in stderr  # the one warning
    assert tree_content(remote) == files


_SFTP_PROGRESS = """
import json, pickle, sys
from dataclasses import replace
from pathlib import Path
import anyio
from finalcopy.backends import helpers as module, open_backend
from finalcopy.engine import BytesProgress, CopyOptions, copy_tree, transfer

module.REPORT_SECONDS = 0.02  # before the fork: the helper reports this often
# And the copy's progress events as often: a 16 MiB file crosses loopback in tens of
# milliseconds, between two events 0.1 s apart, and its bar was never seen part-way.
transfer.PROGRESS_SECONDS = 0.01
helpers = module.Helpers.fork(1)
src, url = Path(sys.argv[1]), sys.argv[2]
options = replace(pickle.loads(bytes.fromhex(sys.argv[3])), helpers=helpers)
partial = {}

def seen(event):
    if isinstance(event, BytesProgress):
        for path, done, size in event.active:
            if 0 < done < size:
                partial[path] = True

async def main():
    async with await open_backend(url, options) as backend:
        return await copy_tree(src, backend, CopyOptions(), events=seen)

report = anyio.run(main)
helpers.close()
print(json.dumps({"ok": report.ok, "sent": helpers.sent, "partial": sorted(partial)}))
"""


def test_over_sftp_a_file_a_helper_sends_shows_its_progress(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    """The helper reads the file, so it reports the bytes read as it goes: a large file's
    bar moves while the helper sends it, as it does when the command sends it."""
    files = {f"v{i}.bin": os.urandom(1 << 20) * 16 for i in range(4)}  # 16 MiB each
    src = make_tree(tmp_path / "src", files)
    result, _ = _over_sftp(_SFTP_PROGRESS, sshd_server, tmp_path, src, tmp_path / "remote")
    assert result["ok"] and result["sent"] > 0
    assert result["partial"] == sorted(files)  # every file, whoever sent it


_SFTP_INTERRUPT = """
import json, pickle, sys, threading, time
from dataclasses import replace
from pathlib import Path
import anyio
from finalcopy.backends import helpers as module, open_backend
from finalcopy.engine import CopyOptions, copy_tree
from finalcopy.engine.source import FileChunkSource
from finalcopy.errors import Interrupted

read = FileChunkSource._read
def slow_read(self, *args, **kwargs):  # in the command and in its helper (forked after)
    time.sleep(0.005)
    return read(self, *args, **kwargs)
FileChunkSource._read = slow_read
helpers = module.Helpers.fork(1)
src, url = Path(sys.argv[1]), sys.argv[2]
options = replace(pickle.loads(bytes.fromhex(sys.argv[3])), helpers=helpers)
outcomes = []
send = module.Helpers.send
async def recorded(self, *args):
    try:
        await send(self, *args)
        outcomes.append("finished")
    except Interrupted:
        outcomes.append("interrupted")
        raise
module.Helpers.send = recorded
cancel = threading.Event()
threading.Timer(1.0, cancel.set).start()  # Ctrl-C, while each file is a few seconds from done

async def main():
    async with await open_backend(url, options) as backend:
        return await copy_tree(src, backend, CopyOptions(), cancel=cancel)

started = time.monotonic()
report = anyio.run(main)
helpers.close()
print(json.dumps({"interrupted": report.interrupted, "outcomes": outcomes}))
"""


def test_over_sftp_an_interrupted_copy_stops_the_file_its_helper_sends(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    """Ctrl-C reaches a helper's batch at its next chunk, as it does the command's own:
    a large file a helper sends is not waited for to its end."""
    files = {f"v{i}.bin": os.urandom(1 << 20) * 16 for i in range(3)}  # 16 MiB, ~1.3 s each
    src = make_tree(tmp_path / "src", files)
    remote = tmp_path / "remote"
    result, _ = _over_sftp(_SFTP_INTERRUPT, sshd_server, tmp_path, src, remote)
    assert result["interrupted"] and result["outcomes"] == ["interrupted"]
    assert all(files[rel] == data for rel, data in tree_content(remote).items())

    async def rerun() -> bool:
        async with await sftp.open_remote(sshd_server, tmp_path, remote) as backend:
            return (await copy_tree(src, backend, CopyOptions())).ok

    assert anyio.run(rerun) and tree_content(remote) == files


def test_a_batch_handed_to_a_helper_as_the_copy_is_cancelled_still_has_its_outcome(
    tmp_path: Path,
) -> None:
    """Cancelled before the request left, the batch is still sent and answered: the
    command never holds a batch without an outcome (it would not know what is written)."""
    src, dst = make_tree(tmp_path / "src", FILES), tmp_path / "dst"
    body = """
    from finalcopy.backends.base import FileTransfer
    from finalcopy.engine.source import FileChunkSource
    from finalcopy.hashing import get_algorithm
    algorithm = get_algorithm("blake3")
    names = sorted(FILES := [p.relative_to(src).as_posix() for p in src.rglob("*.bin")])[:64]
    transfers = [
        FileTransfer(rel, FileChunkSource(src / rel, (src / rel).stat().st_size, algorithm,
                                          65536, threading.Event()), 0o644, None, readback=True)
        for rel in names
    ]
    backend_dirs = {rel.rpartition("/")[0] for rel in names}
    for d in backend_dirs:
        (dst / d).mkdir(parents=True, exist_ok=True)
    async def main():
        with anyio.CancelScope() as scope:
            scope.cancel()
            await helpers.send(backend._put_batch, transfers, algorithm)
    anyio.run(main)
    helpers.close()
    print(json.dumps({"errors": [str(t.error) for t in transfers if t.error],
                      "proven": sum(t.readback_digest == t.source.digest() for t in transfers)}))
    """
    result = _scenario(body, src, dst)
    assert result == {"errors": [], "proven": 64}


def test_every_outcome_a_backend_fills_in_comes_back_from_a_helper(tmp_path: Path) -> None:
    """What the command concludes a file with is what the helper's backend left: the
    read-back, the mtime, a resumed offset (``resumed`` in the events), the attempts, the
    time split, the bytes read and their digest."""
    src = make_tree(tmp_path / "src", {"a.bin": b"a" * 5000, "b.bin": b"b" * 7})
    body = """
    from finalcopy.backends.base import FileTransfer
    from finalcopy.engine.source import FileChunkSource
    from finalcopy.hashing import get_algorithm
    from tests.support.sending import fill_every_outcome
    algorithm = get_algorithm("blake3")
    transfers = [
        FileTransfer(rel, FileChunkSource(src / rel, (src / rel).stat().st_size, algorithm,
                                          65536, threading.Event()), 0o644, None)
        for rel in ("a.bin", "b.bin")
    ]
    anyio.run(helpers.send, fill_every_outcome, transfers, algorithm)
    helpers.close()
    print(json.dumps({"files": [[t.readback_digest, t.dest_mtime_ns, t.resumed_from, t.attempts,
                       [t.times.stream, t.times.commit, t.times.verify], t.source.done,
                       t.source.digest(), t.error] for t in transfers]}))
    """
    result = _scenario(body, src, tmp_path / "dst")
    assert result["files"] == [
        ["01", 1, 100, 2, [1.5, 2.5, 3.5], 5000, _blake3(b"a" * 5000), None],
        ["02", 2, 200, 3, [1.5, 2.5, 3.5], 7, _blake3(b"b" * 7), None],
    ]
