"""Time finalcopy and other copy tools on the same trees, in the same run.

Ratios only mean something between tools measured on one machine, one tree
and one page-cache state, so every tool runs here, interleaved: run ``i``
starts with tool ``i mod n`` (rotated order), which spreads slow drifts
(thermal throttling, a neighbour's load, cache warm-up) evenly over the tools
instead of charging them to whichever came first or last.

Each run: remove the previous destination, ``sync``, then time the tool's
command with ``time.perf_counter`` around the subprocess (wall time) and
GNU ``/usr/bin/time -v`` (peak RSS), and check that every source file landed
with its size (optionally its SHA-256). A wrong copy is a failure, not a time.

``python -m benchmarks.run --help`` lists the options; ``benchmarks/README.md``
explains the targets and the columns.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import importlib.util
import json
import os
import platform
import posixpath
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from benchmarks.workloads import MiB, generate

REPO_ROOT = Path(__file__).resolve().parent.parent
TIME_BIN = "/usr/bin/time"
DEFAULT_DIR = Path("/dev/shm/finalcopy-bench")
#: The only name the runner ever deletes in a destination root.
DEST_NAME = "finalcopy-bench-dst"
DEFAULT_CIPHER = "aes128-gcm@openssh.com"
TARGETS = ("local", "ntfs", "sftp")
WORKLOAD_NAMES = ("projects", "small")
_RSS_RE = re.compile(r"Maximum resident set size \(kbytes\):\s*(\d+)")
_SIGNAL_RE = re.compile(r"Command terminated by signal (\d+)")


# --------------------------------------------------------------------------
# Where the copies land


@dataclass(frozen=True)
class SshTarget:
    """An SSH server and the client options every OpenSSH-based tool shares."""

    host: str
    port: int
    user: str
    key: Path | None = None
    known_hosts: Path | None = None
    cipher: str = DEFAULT_CIPHER

    def options(self) -> list[str]:
        """``-o``/``-i`` options, identical for ssh, scp, sftp and rsync's ssh.

        Compression is forced off: a user config with ``Compression yes``
        would otherwise turn a throughput test into a CPU test.
        """
        opts = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
        opts += ["-o", "Compression=no", "-o", f"Ciphers={self.cipher}"]
        if self.known_hosts is not None:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.key is not None:
            opts += ["-i", str(self.key), "-o", "IdentitiesOnly=yes"]
        return opts

    @property
    def login(self) -> str:
        """``user@host`` with an IPv6 address bracketed as scp and rsync want."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}"

    def ssh_argv(self) -> list[str]:
        """The ssh command without a destination, as rsync's ``-e`` wants it."""
        return ["ssh", "-p", str(self.port), *self.options()]

    def spec(self, path: str) -> str:
        """``user@host:path`` for scp and rsync."""
        return f"{self.login}:{path}"

    def url(self, path: str) -> str:
        """``sftp://user@host:port/path`` for finalcopy."""
        return f"sftp://{self.login}:{self.port}{path}"

    def client_config(self) -> str:
        """An ``ssh_config`` block with the same settings, for tools without flags."""
        lines = [
            f"Host {self.host}",
            f"    Port {self.port}",
            f"    User {self.user}",
            "    StrictHostKeyChecking yes",
            "    Compression no",
            f"    Ciphers {self.cipher}",
        ]
        if self.known_hosts is not None:
            lines.append(f"    UserKnownHostsFile {self.known_hosts}")
        if self.key is not None:
            lines += [f"    IdentityFile {self.key}", "    IdentitiesOnly yes"]
        return "\n".join(lines) + "\n"

    def run(self, command: str, timeout: float = 600) -> subprocess.CompletedProcess[bytes]:
        """Run a shell command on the server."""
        return subprocess.run(
            [*self.ssh_argv(), self.login, command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )


class Destination(Protocol):
    """The folder each run copies into, emptied between runs."""

    @property
    def path(self) -> str:
        """What tools receive as their destination argument (a path)."""

    def clear(self) -> None:
        """Remove the previous run's copy, if any."""

    def listing(self) -> dict[str, int]:
        """Size of every regular file below :attr:`path`, by relative POSIX path."""

    def digests(self) -> dict[str, str]:
        """SHA-256 of every regular file below :attr:`path`, by relative path."""

    def describe(self) -> str:
        """File system or server, for the report's context."""


@dataclass
class LocalDestination:
    """A folder on a mounted file system (tmpfs, disk, ntfs-3g)."""

    root: Path

    @property
    def path(self) -> str:
        return str(self.root / DEST_NAME)

    def clear(self) -> None:
        target = Path(self.path)
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)

    def listing(self) -> dict[str, int]:
        return local_listing(Path(self.path))

    def digests(self) -> dict[str, str]:
        return local_digests(Path(self.path))

    def describe(self) -> str:
        return f"{self.root} ({fs_type(self.root)})"


@dataclass
class RemoteDestination:
    """A folder on an SSH server, managed through ``ssh`` commands."""

    ssh: SshTarget
    root: str

    @property
    def path(self) -> str:
        return posixpath.join(self.root, DEST_NAME)

    def clear(self) -> None:
        proc = self.ssh.run(f"rm -rf -- {shlex.quote(self.path)}")
        if proc.returncode != 0:
            raise RuntimeError(f"remote cleanup failed: {first_line(proc.stderr)}")

    def listing(self) -> dict[str, int]:
        # NUL-separated so no file name can break the parsing.
        proc = self.ssh.run(f"find {shlex.quote(self.path)} -type f -printf '%s %P\\0'")
        if proc.returncode != 0:
            return {}
        sizes: dict[str, int] = {}
        for entry in proc.stdout.split(b"\0"):
            if entry:
                size, _, name = entry.partition(b" ")
                sizes[os.fsdecode(name)] = int(size)
        return sizes

    def digests(self) -> dict[str, str]:
        proc = self.ssh.run(
            f"cd {shlex.quote(self.path)} && find . -type f -print0 | xargs -0 -r sha256sum",
            timeout=3600,
        )
        result: dict[str, str] = {}
        for line in proc.stdout.decode(errors="replace").splitlines():
            digest, _, name = line.partition("  ")
            result[name.removeprefix("./")] = digest
        return result

    def describe(self) -> str:
        return f"{self.root} on {self.ssh.login} port {self.ssh.port} (SFTP)"


def local_listing(root: Path) -> dict[str, int]:
    """Sizes of regular files below ``root`` (symlinks are not followed)."""
    sizes: dict[str, int] = {}
    for folder, _dirs, names in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            if st.st_mode & 0o170000 == 0o100000:
                rel = name if rel_folder == "." else f"{rel_folder}/{name}"
                sizes[rel.replace(os.sep, "/")] = st.st_size
    return sizes


def local_digests(root: Path) -> dict[str, str]:
    """SHA-256 of each regular file below ``root``; the sha256sum format other hosts use."""
    result: dict[str, str] = {}
    for rel in local_listing(root):
        with open(root / rel, "rb") as handle:
            result[rel] = hashlib.file_digest(handle, "sha256").hexdigest()
    return result


def fs_type(path: Path) -> str:
    """File system type of the mount holding ``path`` (longest mount-point prefix)."""
    resolved = str(path.resolve())
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1].replace("\\040", " ")
            inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, kind = mount, fields[2]
    return kind


# --------------------------------------------------------------------------
# The tools


@dataclass(frozen=True)
class Job:
    """Everything a tool needs to build its command line."""

    src: Path
    dst: str
    scratch: Path
    ssh: SshTarget | None = None
    python: str = sys.executable
    finalcopy_args: tuple[str, ...] = ()

    def need_ssh(self) -> SshTarget:
        """The SSH target; SFTP tools are only built when there is one."""
        if self.ssh is None:
            raise RuntimeError("this tool needs an SSH target")
        return self.ssh


@dataclass(frozen=True)
class Tool:
    """One way of copying a tree: adding a tool is adding one of these."""

    key: str
    label: str
    targets: frozenset[str]
    argv: Callable[[Job], list[str]]
    version_argv: Callable[[Job], list[str]]
    #: Executables that must be on PATH.
    programs: tuple[str, ...] = ()
    #: Python modules that must be importable by ``Job.python``.
    modules: tuple[str, ...] = ()
    #: Reference tools get a ratio column.
    reference: bool = False
    note: str = ""
    #: Writes files the command needs (batch file, ssh config); untimed.
    prepare: Callable[[Job], None] | None = None
    #: Extra environment variables for the command.
    env: Callable[[Job], dict[str, str]] | None = None
    #: Runs before every timed run, untimed (a tool that consumes its source).
    before_each: Callable[[Job], None] | None = None

    def unavailable(self) -> str | None:
        """Why this tool cannot run here, or None."""
        missing = [p for p in self.programs if shutil.which(p) is None]
        missing += [m for m in self.modules if not module_present(m)]
        return f"not found: {', '.join(missing)}" if missing else None


def module_present(name: str) -> bool:
    """Whether ``python -m``/``import`` finds ``name`` from the repository root.

    Only the top-level package is located (nothing is imported), so a broken
    work-in-progress package still counts as present and fails visibly.
    """
    if (REPO_ROOT / name.replace(".", "/")).is_dir():
        return True
    return importlib.util.find_spec(name.partition(".")[0]) is not None


def _finalcopy(job: Job, *options: str) -> list[str]:
    return [job.python, "-m", "finalcopy", "copy", *options, *job.finalcopy_args]


def _finalcopy_version(job: Job) -> list[str]:
    return [job.python, "-m", "finalcopy", "--version"]


def _finalcopy_local(*options: str) -> Callable[[Job], list[str]]:
    return lambda job: [*_finalcopy(job, *options), str(job.src), job.dst]


def _finalcopy_sftp(*options: str) -> Callable[[Job], list[str]]:
    def argv(job: Job) -> list[str]:
        ssh = job.need_ssh()
        flags = list(options)
        if ssh.key is not None:
            flags += ["--identity", str(ssh.key)]
        if ssh.known_hosts is not None:
            flags += ["--known-hosts", str(ssh.known_hosts)]
        return [*_finalcopy(job, *flags), str(job.src), ssh.url(job.dst)]

    return argv


def _ssh_home(job: Job) -> Path:
    return job.scratch / "home"


def _prepare_ssh_home(job: Job) -> None:
    """A private ``~/.ssh/config``: the benchmark's cipher, none of the user's settings."""
    ssh_dir = _ssh_home(job) / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (ssh_dir / "config").write_text(job.need_ssh().client_config())


def _sftp_batch(job: Job) -> Path:
    return job.scratch / "sftp.batch"


def _prepare_sftp_batch(job: Job) -> None:
    _sftp_batch(job).write_text(f'put -r "{job.src}" "{job.dst}"\n')


def _sftp_argv(job: Job) -> list[str]:
    ssh = job.need_ssh()
    batch = ["-b", str(_sftp_batch(job))]
    return ["sftp", "-q", "-P", str(ssh.port), *ssh.options(), *batch, ssh.login]


def _scp_argv(job: Job) -> list[str]:
    ssh = job.need_ssh()
    return ["scp", "-q", "-r", "-P", str(ssh.port), *ssh.options(), str(job.src), ssh.spec(job.dst)]


def _rsync_ssh_argv(job: Job) -> list[str]:
    ssh = job.need_ssh()
    return ["rsync", "-a", "-e", shlex.join(ssh.ssh_argv()), f"{job.src}/", ssh.spec(job.dst) + "/"]


_ASYNCSSH_PUT = """\
import asyncio, sys
import asyncssh

async def main(host, port, user, key, known_hosts, cipher, src, dst):
    options = {"port": int(port), "username": user, "encryption_algs": [cipher]}
    if key:
        options["client_keys"] = [key]
    if known_hosts:
        options["known_hosts"] = known_hosts
    async with asyncssh.connect(host, **options) as conn, conn.start_sftp_client() as sftp:
        await sftp.put(src, dst, recurse=True)

asyncio.run(main(*sys.argv[1:]))
"""


def _asyncssh_argv(job: Job) -> list[str]:
    ssh = job.need_ssh()
    identity = [str(ssh.key or ""), str(ssh.known_hosts or ""), ssh.cipher]
    return [job.python, "-c", _ASYNCSSH_PUT, ssh.host, str(ssh.port), ssh.user, *identity,
            str(job.src), job.dst]  # fmt: skip


_COPYTREE = "import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2])"
_LOCAL = frozenset({"local"})
_FILESYSTEMS = frozenset({"local", "ntfs"})
_SFTP = frozenset({"sftp"})


def _fixed(*argv: str) -> Callable[[Job], list[str]]:
    return lambda _job: list(argv)


def _python_print(expr: str) -> Callable[[Job], list[str]]:
    return lambda job: [job.python, "-c", f"print({expr})"]


def _pipeline_work(job: Job) -> Path:
    return job.scratch / "work" / job.src.name


def _prepare_pipeline_run(job: Job) -> None:
    """A fresh work directory (``run`` deletes its sources) and an existing output."""
    for name in ("work", "archives", "logs"):
        shutil.rmtree(job.scratch / name, ignore_errors=True)
    shutil.copytree(job.src, _pipeline_work(job))
    Path(job.dst).mkdir(parents=True, exist_ok=True)


def _finalcopy_run(job: Job) -> list[str]:
    return [
        job.python, "-m", "finalcopy", "run", str(_pipeline_work(job)),
        "--output-dir", job.dst,
        "--archives-dir", str(job.scratch / "archives"),
        "--log-dir", str(job.scratch / "logs"),
    ]  # fmt: skip


def _finalcopy_tools() -> list[Tool]:
    """finalcopy with and without verification, on every target."""
    cipher = "; cipher from a generated ~/.ssh/config"
    variants = [
        ("finalcopy", "finalcopy", (),
         "hashes while copying, reads the copy back, writes a manifest",
         "hashes while copying, hashes again on the server, writes a manifest" + cipher),
        ("finalcopy-noverify", "finalcopy --verify none", ("--verify", "none"),
         "hashes while copying, writes a manifest, no verification",
         "hashes while copying, writes a manifest, no verification" + cipher),
    ]  # fmt: skip
    tools: list[Tool] = []
    for key, label, options, fs_note, sftp_note in variants:
        tools.append(
            Tool(key, label, _FILESYSTEMS, _finalcopy_local(*options), _finalcopy_version,
                 modules=("finalcopy",), note=fs_note)
        )  # fmt: skip
        tools.append(
            Tool(key, label, _SFTP, _finalcopy_sftp(*options), _finalcopy_version,
                 modules=("finalcopy",), prepare=_prepare_ssh_home,
                 env=lambda job: {"HOME": str(_ssh_home(job))}, note=sftp_note)
        )  # fmt: skip
    tools.append(
        Tool("finalcopy-run", "finalcopy run", _LOCAL, _finalcopy_run, _finalcopy_version,
             modules=("finalcopy",), before_each=_prepare_pipeline_run,
             note="the pipeline step: archive, copy + validate JSON, verify, delete the source "
                  "(the work directory is re-created before each run, untimed)")
    )  # fmt: skip
    return tools


# One entry per tool and target family; keys repeat across targets so
# ``--tools rsync`` means "the rsync variant for this target".
TOOLS: tuple[Tool, ...] = (
    *_finalcopy_tools(),
    Tool("cp", "cp -r", _FILESYSTEMS, lambda job: ["cp", "-r", str(job.src), job.dst],
         _fixed("cp", "--version"), programs=("cp",), reference=True,
         note="no verification, no metadata"),
    Tool("rsync", "rsync -a", _LOCAL,
         lambda job: ["rsync", "-a", f"{job.src}/", f"{job.dst}/"],
         _fixed("rsync", "--version"), programs=("rsync",), reference=True,
         note="checksums the data it receives (no read-back), keeps metadata"),
    Tool("rsync", "rsync -a --no-perms --no-owner --no-group --no-times", frozenset({"ntfs"}),
         lambda job: ["rsync", "-a", "--no-perms", "--no-owner", "--no-group", "--no-times",
                      f"{job.src}/", f"{job.dst}/"],
         _fixed("rsync", "--version"), programs=("rsync",), reference=True,
         note="the seed's first choice on NTFS: no metadata calls"),
    Tool("shutil", "shutil.copytree", _LOCAL,
         lambda job: [job.python, "-c", _COPYTREE, str(job.src), job.dst],
         _python_print("'Python', __import__('platform').python_version()"),
         note="the seed's last fallback; copy2 keeps mode and mtime"),
    Tool("rclone", "rclone copy", _LOCAL,
         lambda job: ["rclone", "copy", "--config", "/dev/null", "--transfers", "4",
                      "--checkers", "8", str(job.src), job.dst],
         _fixed("rclone", "version"), programs=("rclone",),
         note="4 parallel transfers; checks size and MD5 after each file (its default)"),
    Tool("sftp", "sftp -b (put -r)", _SFTP, _sftp_argv, _fixed("ssh", "-V"),
         programs=("sftp",), prepare=_prepare_sftp_batch,
         note="OpenSSH client, one file at a time"),
    Tool("scp", "scp -r", _SFTP, _scp_argv, _fixed("ssh", "-V"), programs=("scp",),
         reference=True, note="OpenSSH 9+ scp speaks SFTP underneath"),
    Tool("rsync", "rsync -a -e ssh", _SFTP, _rsync_ssh_argv, _fixed("rsync", "--version"),
         programs=("rsync", "ssh"), reference=True, note="needs rsync on the server"),
    Tool("asyncssh", "asyncssh SFTPClient.put", _SFTP, _asyncssh_argv,
         _python_print("'asyncssh', __import__('asyncssh').__version__"), modules=("asyncssh",),
         note="the library finalcopy builds on, with put(recurse=True) defaults"),
)  # fmt: skip


def tools_for(target: str) -> list[Tool]:
    """The registry's tools for one target, in display order."""
    return [tool for tool in TOOLS if target in tool.targets]


# --------------------------------------------------------------------------
# Measuring


@dataclass
class RunRecord:
    """One timed execution of one tool."""

    run: int
    position: int
    wall_s: float
    max_rss_kib: int | None
    ok: bool
    error: str | None = None


@dataclass
class ToolResult:
    """All runs of one tool on one workload, and their summary."""

    key: str
    label: str
    status: str = "ok"  # ok | failed | skipped
    error: str | None = None
    runs: list[RunRecord] = field(default_factory=list)
    median_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    mib_s: float | None = None
    rss_median_mib: float | None = None
    #: Median wall time divided by each reference tool's median (< 1: faster),
    #: by the reference's key.
    ratios: dict[str, float] = field(default_factory=dict)

    def summarize(self, total_bytes: int) -> None:
        """Fill the statistics from the successful runs."""
        walls = [r.wall_s for r in self.runs if r.ok]
        if self.status != "ok" or not walls:
            return
        self.median_s = statistics.median(walls)
        self.min_s, self.max_s = min(walls), max(walls)
        self.mib_s = total_bytes / MiB / self.median_s if self.median_s > 0 else None
        rss = [r.max_rss_kib for r in self.runs if r.ok and r.max_rss_kib is not None]
        self.rss_median_mib = statistics.median(rss) / 1024 if rss else None


@dataclass
class WorkloadResult:
    """One workload: its tree and every tool's result."""

    name: str
    scale: float
    files: int
    bytes: int
    generate_s: float
    tools: list[ToolResult]


@dataclass
class Outcome:
    """What one command did: wall time, peak RSS, and an error if it failed."""

    wall_s: float
    max_rss_kib: int | None
    error: str | None


def first_line(raw: bytes) -> str:
    """The line of a tool's stderr that best says what went wrong.

    The first non-empty line, except for Python tracebacks, whose first line
    says nothing and whose last line holds the exception.
    """
    lines = [ln.strip() for ln in raw.decode(errors="replace").splitlines() if ln.strip()]
    if not lines:
        return ""
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_timed(
    argv: Sequence[str],
    env: dict[str, str],
    log_dir: Path,
    timeout: float,
    sync_in_timing: bool,
) -> Outcome:
    """Run one command under ``/usr/bin/time -v``; wall time from perf_counter.

    The command gets its own session so a timeout can stop the tool and every
    process it started, not just GNU time.
    """
    time_file = log_dir / "time.txt"
    time_file.unlink(missing_ok=True)
    wrapped = (
        [TIME_BIN, "-v", "-o", str(time_file), *argv] if os.access(TIME_BIN, os.X_OK) else [*argv]
    )
    with (log_dir / "stdout").open("wb") as out, (log_dir / "stderr").open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            wrapped,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return Outcome(time.perf_counter() - started, None, f"timed out after {timeout:g} s")
        if sync_in_timing:
            os.sync()
        wall = time.perf_counter() - started
    report = ""
    with contextlib.suppress(OSError):
        report = time_file.read_text(errors="replace")
    match = _RSS_RE.search(report)
    rss = int(match.group(1)) if match else None
    if code == 0:
        return Outcome(wall, rss, None)
    # GNU time exits 128+N for a signal; name it, since SIGKILL usually means the OOM killer.
    killed = _SIGNAL_RE.search(report)
    status = f"killed by {_signal_name(int(killed.group(1)))}" if killed else f"exit status {code}"
    message = first_line((log_dir / "stderr").read_bytes())
    message = message or first_line((log_dir / "stdout").read_bytes())
    return Outcome(wall, rss, status + (f": {message}" if message else ""))


def check_copy(
    source: dict[str, int],
    copied: dict[str, int],
    src_name: str,
    source_digests: dict[str, str] | None,
    dest_digests: Callable[[], dict[str, str]],
) -> str | None:
    """None when every source file landed with its size (and digest); else why not.

    Tools disagree on whether ``SRC DST`` lands in ``DST`` or ``DST/SRC``;
    both are accepted. Extra files (a manifest, say) are allowed.
    """
    best_prefix, best_hits = "", -1
    for prefix in ("", src_name + "/"):
        hits = sum(1 for rel in source if prefix + rel in copied)
        if hits > best_hits:
            best_prefix, best_hits = prefix, hits
    missing = [rel for rel in source if best_prefix + rel not in copied]
    if missing:
        return f"incomplete copy: {len(missing)} of {len(source)} files missing (e.g. {missing[0]})"
    wrong = [rel for rel, size in source.items() if copied[best_prefix + rel] != size]
    if wrong:
        rel = wrong[0]
        return (
            f"wrong copy: {len(wrong)} file(s) differ in size "
            f"(e.g. {rel}: {copied[best_prefix + rel]} != {source[rel]})"
        )
    if source_digests is not None:
        digests = dest_digests()
        bad = [rel for rel, d in source_digests.items() if digests.get(best_prefix + rel) != d]
        if bad:
            return f"wrong copy: {len(bad)} file(s) differ in content (e.g. {bad[0]})"
    return None


# --------------------------------------------------------------------------
# Context of the measurement


def _proc_field(path: str, key: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    return None


def system_context() -> dict[str, str]:
    """Machine facts a reader needs before trusting a ratio."""
    mem_kib = _proc_field("/proc/meminfo", "MemTotal") or "0 kB"
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "nproc": str(len(os.sched_getaffinity(0))),
        "memory": f"{int(mem_kib.split()[0]) / 1024 / 1024:.1f} GiB",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        # A busy machine explains a wide min-max spread better than any tool does.
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def tool_version(tool: Tool, job: Job) -> str:
    """First line of the tool's version output (ssh -V prints on stderr)."""
    try:
        proc = subprocess.run(
            tool.version_argv(job), capture_output=True, timeout=30, cwd=REPO_ROOT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    if proc.returncode != 0:
        return "unknown (version command failed)"
    line = first_line(proc.stdout) or first_line(proc.stderr) or "unknown"
    return " ".join(line.split())


def command_template(argv: Sequence[str], job: Job) -> str:
    """The command on one line, with this run's paths replaced by names.

    Multi-line ``python -c`` scripts become ``SCRIPT`` (they are in this file).
    """
    text = shlex.join("SCRIPT" if "\n" in arg else arg for arg in argv)
    # Longest first, so a path is never half-replaced by one of its prefixes.
    pairs = [
        (job.dst, "/DST" if job.ssh else "DST"),
        (str(job.src), "SRC"),
        (str(job.scratch), "SCRATCH"),
        (shlex.quote(job.python), "python"),
    ]
    if job.ssh is not None:
        pairs += [(str(job.ssh.key), "KEY"), (str(job.ssh.known_hosts), "KNOWN_HOSTS")]
    for real, name in sorted(pairs, key=lambda pair: -len(pair[0])):
        text = text.replace(real, name)
    return text


# --------------------------------------------------------------------------
# SSH server and NTFS mount for the benchmark's duration


def start_sshd(stack: contextlib.ExitStack, folder: Path, cipher: str) -> SshTarget:
    """Start the test suite's throw-away sshd on 127.0.0.1 until ``stack`` closes."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.support.sshd import running_sshd

    server = stack.enter_context(running_sshd(folder, log_level="ERROR"))
    return SshTarget(
        host=server.host,
        port=server.port,
        user=server.user,
        key=server.client_key,
        known_hosts=server.known_hosts,
        cipher=cipher,
    )


def mount_ntfs(stack: contextlib.ExitStack, folder: Path, size_mib: int) -> Path:
    """Make and mount a sparse NTFS image (the test suite's helper) until ``stack`` closes.

    The image lives in ``folder``: on tmpfs, the timings show what ntfs-3g
    and the tool cost in CPU, without a disk's speed mixed in.
    """
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.support.ntfs import mounted_ntfs

    return stack.enter_context(mounted_ntfs(folder, size_mib=size_mib)).mountpoint


def helper_present(name: str) -> bool:
    """Whether the test suite's helper ``tests/support/<name>.py`` is in this checkout."""
    return (REPO_ROOT / "tests" / "support" / f"{name}.py").is_file()


# --------------------------------------------------------------------------
# The benchmark


@dataclass
class Settings:
    """The options that shape a benchmark, as recorded in the report."""

    target: str
    workloads: list[str]
    runs: int
    warmup: int
    scale: float
    seed: int
    timeout: float
    timed_sync: bool
    check_content: bool
    source_dir: str
    destination: str
    tools: list[str]


def log(message: str) -> None:
    """Progress goes to stderr so stdout is exactly the report."""
    print(message, file=sys.stderr, flush=True)


def rotated(items: Sequence[Tool], shift: int) -> list[Tool]:
    """``items`` starting at ``shift``: each tool leads once every len(items) runs."""
    if not items:
        return []
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def bench_workload(
    name: str,
    settings: Settings,
    tools: Sequence[Tool],
    skipped: dict[str, str],
    dest: Destination,
    scratch: Path,
    make_job: Callable[[Path, Path], Job],
) -> WorkloadResult:
    """Generate one workload, time every tool on it, and summarize."""
    src_parent = scratch / "src"
    started = time.perf_counter()
    src = generate(name, src_parent, settings.scale, settings.seed)
    generate_s = time.perf_counter() - started
    source = local_listing(src)
    total = sum(source.values())
    log(f"[{name}] generated {len(source)} files, {total / MiB:.1f} MiB in {generate_s:.1f} s")
    source_digests = local_digests(src) if settings.check_content else None

    results = {t.key: ToolResult(t.key, t.label) for t in tools}
    for key, reason in skipped.items():
        results[key] = ToolResult(key, key, status="skipped", error=reason)
    jobs: dict[str, Job] = {}
    for tool in tools:
        tool_scratch = scratch / "tools" / tool.key
        tool_scratch.mkdir(parents=True, exist_ok=True)
        jobs[tool.key] = make_job(src, tool_scratch)
        if tool.prepare is not None:
            tool.prepare(jobs[tool.key])

    def attempt(tool: Tool, run: int, position: int) -> RunRecord:
        job = jobs[tool.key]
        dest.clear()
        os.sync()
        env = {**os.environ, "LC_ALL": "C.UTF-8", **(tool.env(job) if tool.env else {})}
        if tool.before_each is not None:
            tool.before_each(job)
        outcome = run_timed(tool.argv(job), env, job.scratch, settings.timeout, settings.timed_sync)
        error = outcome.error
        if error is None:
            error = check_copy(source, dest.listing(), src.name, source_digests, dest.digests)
        return RunRecord(run, position, outcome.wall_s, outcome.max_rss_kib, error is None, error)

    active = list(tools)
    for run in range(-settings.warmup, settings.runs):
        for position, tool in enumerate(rotated(active, run)):
            record = attempt(tool, run, position)
            kind = "warm-up" if run < 0 else f"run {run + 1}/{settings.runs}"
            status = f"{record.wall_s:.2f} s" if record.ok else f"FAILED: {record.error}"
            log(f"[{name}] {kind} {tool.label}: {status}")
            if record.ok and run < 0:
                continue
            results[tool.key].runs.append(record)
            if not record.ok:
                results[tool.key].status = "failed"
                results[tool.key].error = record.error
                active.remove(tool)
    dest.clear()
    shutil.rmtree(src_parent)

    ordered = list(results.values())  # the tools that ran, then the skipped ones
    for result in ordered:
        result.summarize(total)
    references = [results[t.key] for t in tools if t.reference]
    for result in ordered:
        for ref in references:
            if result.median_s is not None and ref.median_s:
                result.ratios[ref.key] = result.median_s / ref.median_s
    return WorkloadResult(name, settings.scale, len(source), total, generate_s, ordered)


# --------------------------------------------------------------------------
# Report


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def markdown_report(
    context: dict[str, str],
    settings: Settings,
    tool_rows: list[dict[str, str]],
    workloads: list[WorkloadResult],
    reference_keys: list[str],
) -> str:
    """The report as markdown: context, tools, then one table per workload."""
    out = [f"## finalcopy benchmark, {context['date']}", ""]
    out += [
        f"- machine: {context['cpu']}, nproc {context['nproc']}, {context['memory']} RAM, "
        f"Linux {context['kernel']}, {context['python']}, load average {context['load']}",
        f"- target: {settings.target}; source: {settings.source_dir}; "
        f"destination: {settings.destination}",
        f"- {settings.runs} timed runs per tool (+{settings.warmup} warm-up), order rotated "
        f"each run; sync inside timing: {'yes' if settings.timed_sync else 'no'}; "
        f"content check: {'sha256' if settings.check_content else 'sizes only'}",
        "",
        "| tool | version | command | note |",
        "|---|---|---|---|",
    ]
    for row in tool_rows:
        out.append(f"| {row['label']} | {row['version']} | `{row['command']}` | {row['note']} |")
    for wl in workloads:
        out += [
            "",
            f"### {wl.name} (scale {wl.scale:g}): {wl.files} files, {wl.bytes / MiB:.1f} MiB",
            "",
        ]
        header = ["tool", "median s", "min s", "max s", "MiB/s", "peak RSS MiB"]
        header += [f"vs {key}" for key in reference_keys]
        out.append("| " + " | ".join(header) + " |")
        out.append("|---|" + "---:|" * (len(header) - 1))
        for res in wl.tools:
            if res.status != "ok":
                cells = [res.label, f"{res.status.upper()}: {res.error or ''}".replace("|", "\\|")]
                cells += [""] * (len(header) - 2)
            else:
                cells = [
                    res.label,
                    _fmt(res.median_s, 3),
                    _fmt(res.min_s, 3),
                    _fmt(res.max_s, 3),
                    _fmt(res.mib_s, 0),
                    _fmt(res.rss_median_mib, 1),
                ]
                cells += [
                    f"{res.ratios[key]:.2f}×" if key in res.ratios else "" for key in reference_keys
                ]
            out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        "Ratios are the tool's median wall time divided by the reference's: "
        "below 1 is faster. Peak RSS is the largest single process of the tool's "
        "process tree (GNU time), not their sum; server-side processes are not counted.",
    ]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Options; see benchmarks/README.md for what each target measures."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Time finalcopy against other copy tools on generated trees.",
    )
    p.add_argument("--workload", choices=[*WORKLOAD_NAMES, "all"], default="all")
    p.add_argument("--scale", type=float, default=1.0, help="workload size factor (default 1)")
    p.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    p.add_argument("--runs", type=int, default=5, help="timed runs per tool (default 5)")
    p.add_argument("--warmup", type=int, default=0, help="untimed runs per tool first")
    p.add_argument("--target", choices=TARGETS, default="local")
    p.add_argument("--tools", help="comma-separated tool keys (default: all available)")
    p.add_argument("--list-tools", action="store_true", help="print the tool registry and exit")
    p.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help=f"scratch folder for sources and logs (default {DEFAULT_DIR}, tmpfs)",
    )
    p.add_argument(
        "--dest-root",
        help="folder that receives the copies: a local folder (local, ntfs) "
        "or an absolute path on the SSH server (sftp)",
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per run (default 3600)")
    p.add_argument(
        "--timed-sync",
        choices=("auto", "on", "off"),
        default="auto",
        help="include a sync(2) in each timing (auto: on for ntfs only)",
    )
    p.add_argument(
        "--check-content", action="store_true", help="compare SHA-256 of every file, not sizes"
    )
    p.add_argument(
        "--finalcopy-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for finalcopy copy (repeatable)",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ssh = p.add_argument_group("sftp target")
    ssh.add_argument("--ssh-host")
    ssh.add_argument("--ssh-port", type=int, default=22)
    ssh.add_argument("--ssh-user", default=os.environ.get("USER") or "root")
    ssh.add_argument("--ssh-key", type=Path)
    ssh.add_argument("--known-hosts", type=Path)
    ssh.add_argument("--ssh-cipher", default=DEFAULT_CIPHER)
    if helper_present("sshd"):
        ssh.add_argument(
            "--start-sshd",
            action="store_true",
            help="run a throw-away sshd on 127.0.0.1 (tests/support/sshd.py) for the benchmark",
        )
    if helper_present("ntfs"):
        ntfs = p.add_argument_group("ntfs target")
        ntfs.add_argument(
            "--mount-ntfs",
            action="store_true",
            help="mount a sparse NTFS image in the scratch folder (tests/support/ntfs.py)",
        )
        ntfs.add_argument(
            "--ntfs-size-mib", type=int, default=4096, help="image size (default 4096)"
        )
    args = p.parse_args(argv)
    for name, default in (("start_sshd", False), ("mount_ntfs", False), ("ntfs_size_mib", 0)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.runs < 1 or args.warmup < 0:
        p.error("--runs must be at least 1 and --warmup at least 0")
    if args.target == "ntfs" and not (args.dest_root or args.mount_ntfs):
        p.error("--target ntfs needs --dest-root on an ntfs-3g mount (or --mount-ntfs)")
    if args.target == "sftp" and not args.start_sshd:
        if not args.ssh_host:
            p.error("--target sftp needs --ssh-host (or --start-sshd)")
        if not args.dest_root or not args.dest_root.startswith("/"):
            p.error("--target sftp needs --dest-root, an absolute path on the server")
    return args


def list_tools() -> str:
    """The registry as a table, with availability on this machine."""
    lines = ["| key | label | targets | reference | available |", "|---|---|---|---|---|"]
    for tool in TOOLS:
        reason = tool.unavailable()
        lines.append(
            f"| {tool.key} | {tool.label} | {', '.join(sorted(tool.targets))} | "
            f"{'yes' if tool.reference else ''} | {reason or 'yes'} |"
        )
    return "\n".join(lines) + "\n"


def select_tools(target: str, wanted: str | None) -> tuple[list[Tool], dict[str, str]]:
    """Tools to run and, for the others asked for or listed, why they are skipped."""
    candidates = tools_for(target)
    keys = [k.strip() for k in wanted.split(",") if k.strip()] if wanted else None
    if keys is not None:
        known = {t.key for t in candidates}
        unknown = [k for k in keys if k not in known]
        if unknown:
            raise SystemExit(
                f"unknown tool(s) for target {target}: {', '.join(unknown)}; "
                f"choose from {', '.join(sorted(known))}"
            )
        candidates = [t for t in candidates if t.key in keys]
    chosen: list[Tool] = []
    skipped: dict[str, str] = {}
    for tool in candidates:
        reason = tool.unavailable()
        if reason is None:
            chosen.append(tool)
        else:
            skipped[tool.key] = reason
    return chosen, skipped


@contextlib.contextmanager
def scratch_folder(base: Path, keep: bool) -> Iterator[Path]:
    """A fresh folder per invocation, so runs never see each other's files."""
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    try:
        yield folder
    finally:
        if keep:
            log(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the markdown report on stdout."""
    args = parse_args(argv)
    if args.list_tools:
        sys.stdout.write(list_tools())
        return 0
    tools, skipped = select_tools(args.target, args.tools)
    if not tools:
        raise SystemExit("no tool to run: " + "; ".join(f"{k} {v}" for k, v in skipped.items()))
    names = list(WORKLOAD_NAMES) if args.workload == "all" else [args.workload]

    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(scratch_folder(args.dir, args.keep))
        ssh: SshTarget | None = None
        dest: Destination
        if args.target == "sftp":
            if args.start_sshd:
                ssh = start_sshd(stack, scratch / "sshd", args.ssh_cipher)
            else:
                ssh = SshTarget(
                    args.ssh_host,
                    args.ssh_port,
                    args.ssh_user,
                    args.ssh_key,
                    args.known_hosts,
                    args.ssh_cipher,
                )
            remote_root = args.dest_root or str(scratch / "remote")
            if args.start_sshd and not args.dest_root:
                (scratch / "remote").mkdir()
            dest = RemoteDestination(ssh, remote_root)
        else:
            if args.dest_root:
                root = Path(args.dest_root)
            elif args.target == "ntfs":
                root = mount_ntfs(stack, scratch / "ntfs", args.ntfs_size_mib)
            else:
                root = scratch / "local"
            root.mkdir(parents=True, exist_ok=True)
            dest = LocalDestination(root)
            if args.target == "ntfs" and fs_type(root) not in ("fuseblk", "ntfs", "ntfs3"):
                log(f"warning: {root} is on {fs_type(root)}, not an NTFS mount")

        timed_sync = args.timed_sync == "on" or (
            args.timed_sync == "auto" and args.target == "ntfs"
        )
        settings = Settings(
            target=args.target,
            workloads=names,
            runs=args.runs,
            warmup=args.warmup,
            scale=args.scale,
            seed=args.seed,
            timeout=args.timeout,
            timed_sync=timed_sync,
            check_content=args.check_content,
            source_dir=f"{args.dir} ({fs_type(args.dir)})",
            destination=dest.describe(),
            tools=[t.key for t in tools],
        )
        finalcopy_args = tuple(args.finalcopy_arg)

        def make_job(src: Path, tool_scratch: Path) -> Job:
            return Job(src, dest.path, tool_scratch, ssh, sys.executable, finalcopy_args)

        sample = make_job(scratch / "src" / "SOURCE", scratch / "tools" / "TOOL")
        tool_rows = [
            {
                "key": t.key,
                "label": t.label,
                "version": tool_version(t, sample),
                "command": command_template(t.argv(sample), sample),
                "note": t.note,
            }
            for t in tools
        ]
        context = system_context()
        results = [
            bench_workload(name, settings, tools, skipped, dest, scratch, make_job)
            for name in names
        ]

    references = [t.key for t in tools if t.reference]
    report = markdown_report(context, settings, tool_rows, results, references)
    sys.stdout.write(report)
    if args.json:
        payload = {
            "context": context,
            "settings": asdict(settings),
            "tools": tool_rows,
            "workloads": [asdict(w) for w in results],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 1 if any(r.status == "failed" for w in results for r in w.tools) else 0


if __name__ == "__main__":
    sys.exit(main())
