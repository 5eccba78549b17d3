"""Every command-line option shared by several commands, each defined once, in blocks.

A block is a frozen dataclass whose fields carry their ``typer.Option``. A
command asks for a block by annotating a parameter with it, and
:func:`with_option_blocks` flattens the block's fields into the signature typer
reads, then hands the command the assembled block::

    @with_option_blocks
    def verify_command(dest: str, *, jobs: Jobs = 4, ssh: SshOptions, output: OutputOptions):
        ...

So ``--identity`` or ``--verify`` has one name, one help text and one check
wherever it appears. The blocks:

* :class:`TransferOptions` — --hash, --chunk-size, --verify, --bwlimit (copy, run, bench);
* :class:`FilesystemOptions` — ``--metadata``, ``--ntfs-names`` (copy, run);
* :class:`SshOptions` — identity, config, port, known hosts, retries, timeout
  (copy, verify, run);
* :class:`OutputOptions` — ``--json``, ``-v``, ``-q``, ``-P``, ``--stats`` (every command);

plus :data:`Jobs`, :data:`Checksum` and :data:`LogFile`, single options shared
by several commands. Choices are :mod:`finalcopy.choices` ``Literal`` types, so
typer lists and checks them; every option sits in a help panel.

This module stays light (no engine, no backend imported until a block is
turned into the engine's options), so ``finalcopy --help`` starts fast.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer

from finalcopy import sizes
from finalcopy.choices import DEFAULT_ALGORITHM, AlgorithmName, MetadataMode, NameMode, VerifyMode
from finalcopy.cli.bwlimit import bwlimit_option, limiter
from finalcopy.cli.runtime import fail
from finalcopy.errors import EXIT_USAGE, UsageError

if TYPE_CHECKING:
    import logging

    from finalcopy.backends.options import DestinationOptions
    from finalcopy.cli.render.base import Renderer
    from finalcopy.engine import CopyOptions

R = TypeVar("R")

# The help panels, in the order ``--help`` shows them.
WHAT = "What to copy"
VERIFICATION = "Verification"
DESTINATION = "Destination and SSH"
OUTPUT = "Output"
PERFORMANCE = "Performance"
CHUNK_RANGE = (4 << 10, 16 << 20)  # 4 KiB to 16 MiB


def parse_size(text: str, option: str = "--chunk-size") -> int:
    """``65536``, ``64K``, ``64KiB``, ``1M`` → bytes; anything else is a usage error naming it."""
    try:
        return sizes.parse_size(text, option)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)


def parse_chunk_size(text: str) -> int:
    """A ``--chunk-size`` value in bytes, within :data:`CHUNK_RANGE` (else a usage error)."""
    size = parse_size(text)
    if not CHUNK_RANGE[0] <= size <= CHUNK_RANGE[1]:
        fail(f"--chunk-size '{text}': must be between 4K and 16M", EXIT_USAGE)
    return size


def _check_chunk_size(text: str) -> str:
    parse_chunk_size(text)
    return text


# -- the blocks ---------------------------------------------------------------------------
@dataclass(frozen=True)
class OptionBlock:
    """The base of a dataclass whose fields are options :func:`with_option_blocks` flattens."""


Jobs = Annotated[
    int,
    typer.Option(
        "--jobs",
        "-j",
        min=1,
        max=64,
        rich_help_panel=PERFORMANCE,
        help="Files transferred at once.",
    ),
]
Checksum = Annotated[
    bool,
    typer.Option(
        "--checksum",
        "-c",
        rich_help_panel=WHAT,
        help="Decide what to skip by hashing both sides instead of trusting the state file.",
    ),
]


def dry_run_option(what: str) -> Any:
    """``--dry-run``/``-n``, whose help says what the command would do: ``what``."""
    return typer.Option("--dry-run", "-n", rich_help_panel=WHAT, help=what)


LogFile = Annotated[
    Path | None,
    typer.Option(
        "--log-file",
        rich_help_panel=OUTPUT,
        help="Also log to FILE (appended; lines 'YYYY-mm-dd HH:MM:SS - LEVEL - message').",
    ),
]


@dataclass(frozen=True)
class TransferOptions(OptionBlock):
    """How files are streamed and proven; ``copy`` and ``run`` must mean the same by them."""

    hash_name: Annotated[
        AlgorithmName,
        typer.Option(
            "--hash",
            rich_help_panel=VERIFICATION,
            help="Hash taken while streaming, written to the manifest "
            "(xxh128 is fast but not cryptographic).",
        ),
    ] = DEFAULT_ALGORITHM
    chunk_size: Annotated[
        str,
        typer.Option(
            "--chunk-size",
            callback=_check_chunk_size,
            rich_help_panel=PERFORMANCE,
            help="Bytes read and hashed at a time, 4K to 16M (65536, 64K, 1M); local "
            "disks are read in blocks of 256K (1M through FUSE) whatever the size.",
        ),
    ] = "64K"
    verify: Annotated[
        VerifyMode,
        typer.Option(
            "--verify",
            rich_help_panel=VERIFICATION,
            help="readback: re-read each file from the destination (server-side hash over SSH) "
            "and compare; size: compare sizes only; none: trust the write.",
        ),
    ] = "readback"
    bwlimit: Annotated[str, bwlimit_option(PERFORMANCE)] = "off"

    def copy_options(
        self, jobs: int, *, checksum: bool = False, dry_run: bool = False
    ) -> CopyOptions:
        """The engine's options, with the one ``--bwlimit`` limiter of the command."""
        from finalcopy.engine import CopyOptions

        return CopyOptions(
            algorithm=self.hash_name,
            chunk_size=parse_size(self.chunk_size),
            jobs=jobs,
            verify=self.verify,
            checksum=checksum,
            dry_run=dry_run,
            bwlimit=limiter(self.bwlimit),
        )


@dataclass(frozen=True)
class FilesystemOptions(OptionBlock):
    """What the destination's file system can hold; NTFS and FUSE mounts differ from POSIX."""

    metadata: Annotated[
        MetadataMode,
        typer.Option(
            "--metadata",
            rich_help_panel=DESTINATION,
            help="auto: detect NTFS/FUSE and probe chmod/utime; posix: keep mode and mtime; "
            "none: content only, never call chmod/utime.",
        ),
    ] = "auto"
    ntfs_names: Annotated[
        NameMode,
        typer.Option(
            "--ntfs-names",
            rich_help_panel=DESTINATION,
            help="On no-metadata destinations: reject names NTFS cannot hold, "
            "or map them reversibly.",
        ),
    ] = "reject"


@dataclass(frozen=True)
class SshOptions(OptionBlock):
    """How to reach an SFTP destination; every command that opens a destination takes them."""

    identity: Annotated[
        Path | None,
        typer.Option("--identity", "-i", rich_help_panel=DESTINATION, help="SSH private key file."),
    ] = None
    ssh_config: Annotated[
        Path | None,
        typer.Option(
            "--ssh-config",
            rich_help_panel=DESTINATION,
            help="OpenSSH client config to read (default: ~/.ssh/config).",
        ),
    ] = None
    port: Annotated[
        int | None,
        typer.Option(
            "--port", rich_help_panel=DESTINATION, help="SSH port (default: ~/.ssh/config or 22)."
        ),
    ] = None
    known_hosts: Annotated[
        Path | None,
        typer.Option(
            "--known-hosts",
            rich_help_panel=DESTINATION,
            help="known_hosts file (default: ~/.ssh/known_hosts).",
        ),
    ] = None
    accept_new_host_key: Annotated[
        bool,
        typer.Option(
            "--accept-new-host-key",
            rich_help_panel=DESTINATION,
            help="Record an unknown SSH host key (never a changed one).",
        ),
    ] = False
    retries: Annotated[
        int,
        typer.Option(
            "--retries",
            envvar="NETWORK_RETRY_ATTEMPTS",
            min=1,
            rich_help_panel=DESTINATION,
            help="Attempts per network operation.",
        ),
    ] = 3
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            envvar="NETWORK_TIMEOUT",
            min=1,
            rich_help_panel=DESTINATION,
            help="Seconds per network operation.",
        ),
    ] = 300.0

    def destination_options(
        self, jobs: int, filesystem: FilesystemOptions | None = None
    ) -> DestinationOptions:
        """The backend's options: these SSH settings, ``jobs``, and the file-system modes."""
        from finalcopy.backends.options import DestinationOptions

        filesystem = filesystem or FilesystemOptions()
        return DestinationOptions(
            metadata=cast("MetadataMode", str(filesystem.metadata)),
            ntfs_names=cast("NameMode", str(filesystem.ntfs_names)),
            identity_file=self.identity,
            port=self.port,
            known_hosts=self.known_hosts,
            accept_new_host_key=self.accept_new_host_key,
            retry_attempts=self.retries,
            timeout=self.timeout,
            jobs=jobs,
            ssh_config=self.ssh_config,
        )


@dataclass(frozen=True)
class OutputOptions(OptionBlock):
    """Who reads the output: people (more with ``-v``, less with ``-q``) or programs."""

    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            rich_help_panel=OUTPUT,
            help="JSON-lines events and a final JSON summary on stdout (docs/json.md).",
        ),
    ] = False
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, rich_help_panel=OUTPUT, help="More output (-vv: debug)."
        ),
    ] = 0
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            rich_help_panel=OUTPUT,
            help="Errors only (the exit code says the rest).",
        ),
    ] = False
    progress: Annotated[
        bool,
        typer.Option(
            "--progress",
            "-P",
            rich_help_panel=OUTPUT,
            help="Live progress display even when stderr is not a terminal.",
        ),
    ] = False
    stats: Annotated[
        float,
        typer.Option(
            "--stats",
            min=0,
            metavar="INTERVAL",
            rich_help_panel=OUTPUT,
            help="Without a terminal: a progress line every INTERVAL seconds (0: none).",
        ),
    ] = 10.0

    def renderer(self, log: logging.Logger | None = None) -> Renderer:
        """The renderer of ``copy`` and ``verify`` these options ask for."""
        from finalcopy.cli.render.engine import engine_renderer

        return engine_renderer(
            self.json_output,
            self.verbose > 0,
            quiet=self.quiet,
            live=self.progress,
            interval=self.stats,
            log=log,
        )


# -- flattening ---------------------------------------------------------------------------
PANELS = (WHAT, VERIFICATION, DESTINATION, OUTPUT, PERFORMANCE)


def _panel_rank(param: inspect.Parameter) -> int:
    for meta in getattr(param.annotation, "__metadata__", ()):
        panel = getattr(meta, "rich_help_panel", None)
        if panel in PANELS:
            return PANELS.index(panel)
    return -1


def with_option_blocks(command: Callable[..., R]) -> Callable[..., R]:
    """Let typer see each :class:`OptionBlock` parameter of ``command`` as its fields.

    The options appear in the order of the command's parameters, a block's
    fields in their declared order. Every parameter becomes keyword-only, as
    typer passes them all by name.
    """
    signature = inspect.signature(command, eval_str=True)
    blocks: dict[str, type[OptionBlock]] = {}
    flat: list[inspect.Parameter] = []
    for param in signature.parameters.values():
        block = param.annotation
        if not (isinstance(block, type) and issubclass(block, OptionBlock)):
            flat.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        blocks[param.name] = block
        hints = typing.get_type_hints(block, include_extras=True)
        for field in dataclasses.fields(block):
            flat.append(
                inspect.Parameter(
                    field.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=field.default,
                    annotation=hints[field.name],
                )
            )
    flat.sort(key=_panel_rank)  # stable: arguments first, then the panels in their order
    names = [param.name for param in flat]
    if len(names) != len(set(names)):
        raise TypeError(f"{command.__name__}: an option name appears twice in {names}")

    @functools.wraps(command)
    def wrapper(**values: Any) -> R:
        for name, block in blocks.items():
            fields = dataclasses.fields(block)
            values[name] = block(**{field.name: values.pop(field.name) for field in fields})
        return command(**values)

    wrapper.__signature__ = signature.replace(parameters=flat)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {param.name: param.annotation for param in flat}
    return wrapper
