"""The other copy tools, and how each is told to copy a tree: ``--compare`` and ``benchmarks/``.

One :class:`Tool` per way of copying and kind of destination (a target):
``local`` (a POSIX file system), ``ntfs`` (a file system without POSIX
metadata, where ``rsync -a`` would fail on chmod) and ``sftp``. Each builds
its argv from a :class:`Job`, so ``finalcopy bench --compare`` and the
repository's ``benchmarks/`` run exactly the same command lines; the
benchmarks add their own entries (finalcopy itself, ``shutil``, asyncssh).

Every OpenSSH-based tool gets the same client options from one
:class:`SshTarget`, so a comparison never hides a cipher or a compression
setting that differs between tools.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from finalcopy.bench.measure import first_line

__all__ = [
    "TOOLS",
    "Job",
    "SshTarget",
    "Tool",
    "select_tools",
    "tool_version",
    "tools_for",
]

TARGETS = ("local", "ntfs", "sftp")
"""Where a comparison can land: a local folder, an NTFS mount, an SFTP server."""


@dataclass(frozen=True)
class SshTarget:
    """An SSH server and the client options every OpenSSH-based tool shares."""

    host: str
    user: str | None = None
    port: int | None = None
    #: Private key (``-i``); None leaves it to the agent and the user's keys.
    key: Path | None = None
    #: ``UserKnownHostsFile``; None means the user's own.
    known_hosts: Path | None = None
    #: ``Ciphers``; None keeps the client's choice.
    cipher: str | None = None
    #: ``-F``: the OpenSSH client configuration to read instead of ``~/.ssh/config``.
    config: Path | None = None
    #: ``StrictHostKeyChecking=accept-new`` instead of ``yes``.
    accept_new: bool = False

    def options(self) -> list[str]:
        """``-F``/``-o``/``-i`` options, identical for ssh, scp, sftp and rsync's ssh.

        The port goes in ``-o Port=`` because ssh spells it ``-p`` and scp and
        sftp ``-P``. Compression is forced off: a user config with
        ``Compression yes`` would otherwise turn a throughput test into a CPU test.
        """
        opts = ["-F", str(self.config)] if self.config is not None else []
        checking = "accept-new" if self.accept_new else "yes"
        opts += ["-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={checking}"]
        opts += ["-o", "Compression=no"]
        if self.port is not None:
            opts += ["-o", f"Port={self.port}"]
        if self.cipher is not None:
            opts += ["-o", f"Ciphers={self.cipher}"]
        if self.known_hosts is not None:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.key is not None:
            opts += ["-i", str(self.key), "-o", "IdentitiesOnly=yes"]
        return opts

    @property
    def login(self) -> str:
        """``[user@]host`` with an IPv6 address bracketed as scp and rsync want."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" if self.user else host

    def ssh_argv(self) -> list[str]:
        """The ssh command without a destination, as rsync's ``-e`` wants it."""
        return ["ssh", *self.options()]

    def spec(self, path: str) -> str:
        """``[user@]host:path`` for scp and rsync."""
        return f"{self.login}:{path}"


@dataclass(frozen=True)
class Job:
    """Everything a tool needs to build its command line."""

    src: Path
    #: A local path, or a path on the SSH server (relative ones from the login folder).
    dst: str
    #: The tool's own folder: batch files, its ssh config, its last stdout and stderr.
    scratch: Path
    ssh: SshTarget | None = None
    python: str = sys.executable
    #: Extra options for the benchmarks' ``finalcopy copy`` entries.
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
    #: Reference tools get a ratio column in the benchmarks' tables.
    reference: bool = False
    note: str = ""
    #: Writes files the command needs (batch file, ssh config); untimed.
    prepare: Callable[[Job], None] | None = None
    #: Extra environment variables for the command.
    env: Callable[[Job], dict[str, str]] | None = None
    #: Runs before every timed run, untimed (a tool that consumes its source).
    before_each: Callable[[Job], None] | None = None
    #: The benchmarks' workloads it applies to; None: every one.
    workloads: frozenset[str] | None = None

    def unavailable(self) -> str | None:
        """Why this tool cannot run here, or None."""
        missing = [p for p in self.programs if shutil.which(p) is None]
        missing += [m for m in self.modules if importlib.util.find_spec(m) is None]
        # "not installed" is what ``bench --compare`` promises for a missing tool.
        return f"not installed: {', '.join(missing)}" if missing else None


def _sftp_batch(job: Job) -> Path:
    return job.scratch / "sftp.batch"


def _prepare_sftp_batch(job: Job) -> None:
    _sftp_batch(job).write_text(f'put -r "{job.src}" "{job.dst}"\n')


def _sftp_argv(job: Job) -> list[str]:
    ssh = job.need_ssh()
    return ["sftp", "-q", *ssh.options(), "-b", str(_sftp_batch(job)), ssh.login]


def _scp_argv(job: Job) -> list[str]:
    ssh = job.need_ssh()
    return ["scp", "-q", "-r", *ssh.options(), str(job.src), ssh.spec(job.dst)]


def _rsync_ssh_argv(job: Job) -> list[str]:
    ssh = job.need_ssh()
    return ["rsync", "-a", "-e", shlex.join(ssh.ssh_argv()), f"{job.src}/", ssh.spec(job.dst) + "/"]


def _rclone_value(value: object) -> str:
    """A value of an rclone connection string, quoted when it holds ``,`` ``:`` or ``"``."""
    text = str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',:"') else text


def _rclone_sftp_argv(job: Job) -> list[str]:
    """rclone's own SFTP client, on a remote defined on the command line (no config file)."""
    ssh = job.need_ssh()
    fields = {"host": ssh.host, "user": ssh.user, "port": ssh.port, "key_file": ssh.key,
              "known_hosts_file": ssh.known_hosts}  # fmt: skip
    remote = ",".join(f"{k}={_rclone_value(v)}" for k, v in fields.items() if v is not None)
    return [*_RCLONE, str(job.src), f":sftp,{remote}:{job.dst}"]


def _fixed(*argv: str) -> Callable[[Job], list[str]]:
    return lambda _job: list(argv)


_RCLONE = ["rclone", "copy", "--config", "/dev/null", "--transfers", "4", "--checkers", "8"]
_LOCAL = frozenset({"local"})
_FILESYSTEMS = frozenset({"local", "ntfs"})
_SFTP = frozenset({"sftp"})
_RSYNC_VERSION = _fixed("rsync", "--version")

# One entry per tool and target family; keys repeat across targets so
# ``--compare rsync`` means "the rsync variant for this destination".
TOOLS: tuple[Tool, ...] = (
    Tool("cp", "cp -r", _FILESYSTEMS, lambda job: ["cp", "-r", str(job.src), job.dst],
         _fixed("cp", "--version"), programs=("cp",), reference=True,
         note="no verification, no metadata"),
    Tool("rsync", "rsync -a", _LOCAL,
         lambda job: ["rsync", "-a", f"{job.src}/", f"{job.dst}/"],
         _RSYNC_VERSION, programs=("rsync",), reference=True,
         note="checksums the data it receives (no read-back), keeps metadata"),
    Tool("rsync", "rsync -a --no-perms --no-owner --no-group --no-times", frozenset({"ntfs"}),
         lambda job: ["rsync", "-a", "--no-perms", "--no-owner", "--no-group", "--no-times",
                      f"{job.src}/", f"{job.dst}/"],
         _RSYNC_VERSION, programs=("rsync",), reference=True,
         note="the seed's first choice on NTFS: no metadata calls"),
    Tool("rclone", "rclone copy", _LOCAL, lambda job: [*_RCLONE, str(job.src), job.dst],
         _fixed("rclone", "version"), programs=("rclone",),
         note="4 parallel transfers; checks size and MD5 after each file (its default)"),
    Tool("sftp", "sftp -b (put -r)", _SFTP, _sftp_argv, _fixed("ssh", "-V"),
         programs=("sftp",), prepare=_prepare_sftp_batch,
         note="OpenSSH client, one file at a time"),
    Tool("scp", "scp -r", _SFTP, _scp_argv, _fixed("ssh", "-V"), programs=("scp",),
         reference=True, note="OpenSSH 9+ scp speaks SFTP underneath"),
    Tool("rsync", "rsync -a -e ssh", _SFTP, _rsync_ssh_argv, _RSYNC_VERSION,
         programs=("rsync", "ssh"), reference=True, note="needs rsync on the server"),
    Tool("rclone", "rclone copy (sftp)", _SFTP, _rclone_sftp_argv, _fixed("rclone", "version"),
         programs=("rclone",),
         note="rclone's own SSH client: reads no ~/.ssh/config, so give the real host name"),
)  # fmt: skip


def tools_for(target: str, tools: Sequence[Tool] = TOOLS) -> list[Tool]:
    """The tools of ``tools`` for one target, in their order."""
    return [tool for tool in tools if target in tool.targets]


def select_tools(
    target: str, keys: Sequence[str] | None, tools: Sequence[Tool] = TOOLS
) -> tuple[list[Tool], dict[str, str], list[str]]:
    """The tools to run for ``keys`` (all when None), why others are skipped, unknown keys.

    A tool that exists for another kind of destination (cp over SFTP) is
    skipped with that reason; one missing here with :meth:`Tool.unavailable`'s
    (``not installed: rsync, ssh``).
    """
    candidates = tools_for(target, tools)
    known = {t.key for t in tools}
    unknown = [k for k in keys or () if k not in known]
    wanted = [t for t in candidates if keys is None or t.key in keys]
    skipped = {k: f"not for {target} destinations" for k in keys or () if k in known}
    chosen: list[Tool] = []
    for tool in wanted:
        skipped.pop(tool.key, None)
        reason = tool.unavailable()
        if reason is None:
            chosen.append(tool)
        else:
            skipped[tool.key] = reason
    return chosen, skipped, unknown


def tool_version(tool: Tool, job: Job, cwd: Path | None = None) -> str:
    """First line of the tool's version output (ssh -V prints on stderr)."""
    try:
        proc = subprocess.run(
            tool.version_argv(job), capture_output=True, timeout=30, cwd=cwd, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    if proc.returncode != 0:
        return "unknown (version command failed)"
    line = first_line(proc.stdout) or first_line(proc.stderr) or "unknown"
    return " ".join(line.split())
