"""Command line: ``python -m benchmarks.run [options]``; see ``benchmarks/README.md``."""

from __future__ import annotations

import argparse
import compileall
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import finalcopy
from benchmarks.measure import Settings, bench_workload, log
from benchmarks.report import json_report, markdown_report, system_context
from benchmarks.targets import (
    DEFAULT_CIPHER,
    TARGETS,
    Destination,
    LocalDestination,
    RemoteDestination,
    SshTarget,
    fs_type,
    mount_ext4,
    mount_ntfs,
    start_sshd,
)
from benchmarks.tools import Job, describe_tools, list_tools, select_tools
from benchmarks.workloads import WORKLOADS

__all__ = ["main", "parse_args"]

DEFAULT_DIR = Path("/dev/shm/finalcopy-bench")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Options; see benchmarks/README.md for what each target measures."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Time finalcopy against other copy tools on generated trees.",
    )
    p.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
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
        help="include a sync(2) in each timing (auto: on for ntfs and --mount-ext4)",
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
    ssh.add_argument(
        "--start-sshd",
        action="store_true",
        help="run a throw-away sshd on 127.0.0.1 (tests/support/sshd.py) for the benchmark",
    )
    ntfs = p.add_argument_group("ntfs target")
    ntfs.add_argument(
        "--mount-ntfs",
        action="store_true",
        help="mount a sparse NTFS image in the scratch folder (tests/support/ntfs.py)",
    )
    p.add_argument(
        "--mount-ext4",
        type=Path,
        metavar="DIR",
        help="local target: copy to a fresh sparse ext4 image kept in DIR (put DIR on a disk: "
        "fsync and sync then reach it); sync is then inside the timings",
    )
    p.add_argument(
        "--image-size-mib",
        type=int,
        default=4096,
        help="size of the --mount-ntfs or --mount-ext4 image (default 4096, sparse)",
    )
    args = p.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        p.error("--runs must be at least 1 and --warmup at least 0")
    # Each would otherwise be ignored without a word, and the run land elsewhere.
    if args.mount_ext4 and args.target != "local":
        p.error(f"--mount-ext4 is for --target local, not {args.target}")
    if args.mount_ext4 and args.dest_root:
        p.error("--mount-ext4 and --dest-root both name the destination: give one")
    if args.target == "ntfs" and not (args.dest_root or args.mount_ntfs):
        p.error("--target ntfs needs --dest-root on an ntfs-3g mount (or --mount-ntfs)")
    if args.target == "sftp" and not args.start_sshd:
        if not args.ssh_host:
            p.error("--target sftp needs --ssh-host (or --start-sshd)")
        if not args.dest_root or not args.dest_root.startswith("/"):
            p.error("--target sftp needs --dest-root, an absolute path on the server")
    return args


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


def open_destination(
    args: argparse.Namespace, stack: contextlib.ExitStack, scratch: Path
) -> tuple[Destination, SshTarget | None]:
    """The folder the copies land in (and the SSH server, for ``--target sftp``)."""
    if args.target == "sftp":
        if args.start_sshd:
            ssh = start_sshd(stack, scratch / "sshd", args.ssh_cipher)
        else:
            login = (args.ssh_host, args.ssh_user, args.ssh_port)
            ssh = SshTarget(*login, args.ssh_key, args.known_hosts, args.ssh_cipher)
        remote_root = args.dest_root or str(scratch / "remote")
        if args.start_sshd and not args.dest_root:
            (scratch / "remote").mkdir()
        return RemoteDestination(ssh, remote_root), ssh
    if args.dest_root:
        root = Path(args.dest_root)
    elif args.target == "ntfs":
        root = mount_ntfs(stack, scratch / "ntfs", args.image_size_mib)
    elif args.mount_ext4:
        root = mount_ext4(stack, args.mount_ext4, args.image_size_mib)
    else:
        root = scratch / "local"
    root.mkdir(parents=True, exist_ok=True)
    if args.target == "ntfs" and fs_type(root) not in ("fuseblk", "ntfs", "ntfs3"):
        log(f"warning: {root} is on {fs_type(root)}, not an NTFS mount")
    return LocalDestination(root), None


def settings_from(
    args: argparse.Namespace, names: list[str], dest: Destination, tools: list[str]
) -> Settings:
    """What shapes this benchmark, as the report records it."""
    return Settings(
        target=args.target,
        workloads=names,
        runs=args.runs,
        warmup=args.warmup,
        scale=args.scale,
        seed=args.seed,
        timeout=args.timeout,
        timed_sync=args.timed_sync == "on"
        or (args.timed_sync == "auto" and (args.target == "ntfs" or bool(args.mount_ext4))),
        check_content=args.check_content,
        source_dir=f"{args.dir} ({fs_type(args.dir)})",
        destination=dest.describe(),
        tools=tools,
    )


def _compile_finalcopy() -> None:
    """Byte-compile the package once, as installing it does.

    An editable install in an environment that writes no bytecode
    (``PYTHONDONTWRITEBYTECODE``) would otherwise compile every module again
    at each timed start, charging finalcopy a cost no installed copy pays.
    """
    compileall.compile_dir(Path(finalcopy.__file__).parent, quiet=1)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the markdown report on stdout."""
    args = parse_args(argv)
    if args.list_tools:
        sys.stdout.write(list_tools())
        return 0
    tools, skipped = select_tools(args.target, args.tools)
    if not tools:
        raise SystemExit("no tool to run: " + "; ".join(f"{k} {v}" for k, v in skipped.items()))
    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
    _compile_finalcopy()

    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(scratch_folder(args.dir, args.keep))
        dest, ssh = open_destination(args, stack, scratch)
        settings = settings_from(args, names, dest, [t.key for t in tools])
        finalcopy_args = tuple(args.finalcopy_arg)

        def make_job(src: Path, tool_scratch: Path) -> Job:
            return Job(src, dest.path, tool_scratch, ssh, sys.executable, finalcopy_args)

        rows = describe_tools(
            tools, make_job(scratch / "src" / "SOURCE", scratch / "tools" / "TOOL")
        )
        context = system_context()
        results = [
            bench_workload(name, settings, tools, skipped, dest, scratch, make_job)
            for name in names
        ]

    references = [t.key for t in tools if t.reference]
    sys.stdout.write(markdown_report(context, settings, rows, results, references))
    if args.json:
        args.json.write_text(json_report(context, settings, rows, results))
    return 1 if any(r.status == "failed" for w in results for r in w.tools) else 0
