"""The tools timed: one ``Tool`` entry per way of copying a tree, and how to run each.

Adding a tool is adding one ``Tool(...)`` to :data:`TOOLS`: a key, a label,
the targets it applies to, a function that builds its argv from a ``Job``,
the command that prints its version, and what it needs on ``PATH`` or as a
Python module.
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

from benchmarks.targets import REPO_ROOT, SshTarget, first_line

__all__ = [
    "TOOLS",
    "Job",
    "Tool",
    "command_template",
    "describe_tools",
    "list_tools",
    "select_tools",
    "tool_version",
    "tools_for",
]


@dataclass(frozen=True)
class Job:
    """Everything a tool needs to build its command line."""

    src: Path
    #: A local path, or an absolute path on the SSH server.
    dst: str
    #: The tool's own folder: batch files, its ssh config, its last stdout and stderr.
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
    #: The workloads it applies to; None: every one.
    workloads: frozenset[str] | None = None

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
             workloads=frozenset({"projects"}),
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


def describe_tools(tools: Sequence[Tool], sample: Job) -> list[dict[str, str]]:
    """Each tool's key, label, version, command (paths as names) and note, for the report."""
    return [
        {
            "key": t.key,
            "label": t.label,
            "version": tool_version(t, sample),
            "command": command_template(t.argv(sample), sample),
            "note": t.note,
        }
        for t in tools
    ]


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
