"""The tools timed: the shared registry of other tools plus finalcopy's own entries.

The other tools' command lines (cp, rsync, rclone, sftp, scp, rsync over
ssh) are :data:`finalcopy.bench.tools.TOOLS`, shared with ``finalcopy bench
--compare``; this module adds what only the repository's benchmarks time:
finalcopy itself as a command (with and without verification, and ``finalcopy
run``), ``shutil.copytree`` and asyncssh's own ``put``. Adding a tool is
adding one ``Tool(...)`` to one of the two registries.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.targets import REPO_ROOT, client_config, ssh_url
from finalcopy.bench import tools as shared
from finalcopy.bench.tools import Job, Tool, tool_version

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
        return [*_finalcopy(job, *flags), str(job.src), ssh_url(ssh, job.dst)]

    return argv


def _ssh_home(job: Job) -> Path:
    return job.scratch / "home"


def _prepare_ssh_home(job: Job) -> None:
    """A private ``~/.ssh/config``: the benchmark's cipher, none of the user's settings."""
    ssh_dir = _ssh_home(job) / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (ssh_dir / "config").write_text(client_config(job.need_ssh()))


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
    login = [ssh.host, str(ssh.port or 22), ssh.user or "root"]
    identity = [str(ssh.key or ""), str(ssh.known_hosts or ""), ssh.cipher or ""]
    return [job.python, "-c", _ASYNCSSH_PUT, *login, *identity, str(job.src), job.dst]


_COPYTREE = "import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2])"
_LOCAL = frozenset({"local"})
_FILESYSTEMS = frozenset({"local", "ntfs"})
_SFTP = frozenset({"sftp"})


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


# Keys repeat across targets so ``--tools rsync`` means "the rsync variant for this target".
TOOLS: tuple[Tool, ...] = (
    *_finalcopy_tools(),
    *shared.TOOLS,
    Tool("shutil", "shutil.copytree", _LOCAL,
         lambda job: [job.python, "-c", _COPYTREE, str(job.src), job.dst],
         _python_print("'Python', __import__('platform').python_version()"),
         note="the seed's last fallback; copy2 keeps mode and mtime"),
    Tool("asyncssh", "asyncssh SFTPClient.put", _SFTP, _asyncssh_argv,
         _python_print("'asyncssh', __import__('asyncssh').__version__"), modules=("asyncssh",),
         note="the library finalcopy builds on, with put(recurse=True) defaults"),
)  # fmt: skip


def tools_for(target: str) -> list[Tool]:
    """The registry's tools for one target, in display order."""
    return shared.tools_for(target, TOOLS)


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
            "version": tool_version(t, sample, cwd=REPO_ROOT),
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
    keys = [k.strip() for k in wanted.split(",") if k.strip()] if wanted else None
    chosen, skipped, unknown = shared.select_tools(target, keys, TOOLS)
    known = {t.key for t in tools_for(target)}
    unknown += [k for k in skipped if k not in known]  # a tool of another target
    if unknown:
        raise SystemExit(
            f"unknown tool(s) for target {target}: {', '.join(unknown)}; "
            f"choose from {', '.join(sorted(known))}"
        )
    return chosen, skipped
