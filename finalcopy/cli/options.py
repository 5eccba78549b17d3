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

* :class:`TransferOptions` — ``--hash``, ``--chunk-size``, ``--verify`` (copy, run);
* :class:`FilesystemOptions` — ``--metadata``, ``--ntfs-names`` (copy, run);
* :class:`SshOptions` — identity, config, port, known hosts, retries, timeout
  (copy, verify, run);
* :class:`OutputOptions` — ``--json``, ``-v`` (every command);

plus :data:`Jobs`, one option shared by copy, verify and run. Choices are
checked while parsing, by :func:`choice`, in the one error style of
:func:`~finalcopy.cli.runtime.fail`.

This module stays light (no engine, no backend imported until a block is
turned into the engine's options), so ``finalcopy --help`` starts fast.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer

from finalcopy.cli.runtime import EXIT_USAGE, fail

if TYPE_CHECKING:
    from finalcopy.backends.options import DestinationOptions, MetadataMode, NameMode
    from finalcopy.engine import CopyOptions, VerifyMode

R = TypeVar("R")

VERIFY_MODES: tuple[VerifyMode, ...] = ("readback", "size", "none")
METADATA_MODES: tuple[MetadataMode, ...] = ("auto", "posix", "none")
NAME_MODES: tuple[NameMode, ...] = ("reject", "map")

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``65536``, ``64K``, ``64KiB``, ``1M`` → bytes."""
    match = _SIZE.match(text)
    if not match:
        raise typer.BadParameter(f"'{text}' is not a size (examples: 65536, 64K, 1M)")
    factor = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match[2].lower()]
    return int(match[1]) * factor


def choice(option: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    """A parse-time check that ``option``'s value is one of ``choices``."""
    allowed = ", ".join(choices[:-1]) + f" or {choices[-1]}"

    def check(value: str) -> str:
        if value not in choices:
            fail(f"{option} must be {allowed}, not '{value}'", EXIT_USAGE)
        return value

    return check


# -- the blocks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OptionBlock:
    """The base of a dataclass whose fields are options :func:`with_option_blocks` flattens."""


Jobs = Annotated[
    int, typer.Option("--jobs", "-j", min=1, max=64, help="Files transferred at once.")
]


@dataclass(frozen=True)
class TransferOptions(OptionBlock):
    """How files are streamed and proven; ``copy`` and ``run`` must mean the same by them."""

    hash_name: Annotated[
        str,
        typer.Option(
            "--hash", help="blake3 (default, fast), sha256 or xxh128 (not cryptographic)."
        ),
    ] = "blake3"
    chunk_size: Annotated[
        str, typer.Option("--chunk-size", help="Bytes per read/write (64K default).")
    ] = "64K"
    verify: Annotated[
        str,
        typer.Option(
            "--verify",
            callback=choice("--verify", VERIFY_MODES),
            help="readback: re-read each file from the destination (server-side hash over SSH) "
            "and compare; size: compare sizes only; none: trust the write.",
        ),
    ] = "readback"

    def copy_options(
        self, jobs: int, *, checksum: bool = False, dry_run: bool = False
    ) -> CopyOptions:
        """The engine's options; a malformed ``--chunk-size`` is a usage error here."""
        from finalcopy.engine import CopyOptions

        return CopyOptions(
            algorithm=self.hash_name,
            chunk_size=parse_size(self.chunk_size),
            jobs=jobs,
            verify=cast("VerifyMode", self.verify),  # checked by choice() while parsing
            checksum=checksum,
            dry_run=dry_run,
        )


@dataclass(frozen=True)
class FilesystemOptions(OptionBlock):
    """What the destination's file system can hold; NTFS and FUSE mounts differ from POSIX."""

    metadata: Annotated[
        str,
        typer.Option(
            "--metadata",
            callback=choice("--metadata", METADATA_MODES),
            help="auto: detect NTFS/FUSE and probe chmod/utime; posix: keep mode and mtime; "
            "none: content only, never call chmod/utime.",
        ),
    ] = "auto"
    ntfs_names: Annotated[
        str,
        typer.Option(
            "--ntfs-names",
            callback=choice("--ntfs-names", NAME_MODES),
            help="On no-metadata destinations: reject names NTFS cannot hold, "
            "or map them reversibly.",
        ),
    ] = "reject"


@dataclass(frozen=True)
class SshOptions(OptionBlock):
    """How to reach an SFTP destination; every command that opens a destination takes them."""

    identity: Annotated[
        Path | None, typer.Option("--identity", "-i", help="SSH private key file.")
    ] = None
    ssh_config: Annotated[
        Path | None,
        typer.Option(
            "--ssh-config", help="OpenSSH client config to read (default: ~/.ssh/config)."
        ),
    ] = None
    port: Annotated[
        int | None, typer.Option("--port", help="SSH port (default: ~/.ssh/config or 22).")
    ] = None
    known_hosts: Annotated[
        Path | None,
        typer.Option("--known-hosts", help="known_hosts file (default: ~/.ssh/known_hosts)."),
    ] = None
    accept_new_host_key: Annotated[
        bool,
        typer.Option(
            "--accept-new-host-key", help="Record an unknown SSH host key (never a changed one)."
        ),
    ] = False
    retries: Annotated[
        int,
        typer.Option(
            "--retries",
            envvar="NETWORK_RETRY_ATTEMPTS",
            min=1,
            help="Attempts per network operation.",
        ),
    ] = 3
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", envvar="NETWORK_TIMEOUT", min=1, help="Seconds per network operation."
        ),
    ] = 300.0

    def destination_options(
        self, jobs: int, filesystem: FilesystemOptions | None = None
    ) -> DestinationOptions:
        """The backend's options: these SSH settings, ``jobs``, and the file-system modes."""
        from finalcopy.backends.options import DestinationOptions

        filesystem = filesystem or FilesystemOptions()
        return DestinationOptions(
            metadata=cast("MetadataMode", filesystem.metadata),  # checked by choice()
            ntfs_names=cast("NameMode", filesystem.ntfs_names),  # checked by choice()
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
    """Who reads the output: people (more with ``-v``) or programs (``--json``)."""

    json_output: Annotated[
        bool,
        typer.Option("--json", help="JSON-lines events and a final JSON summary on stdout."),
    ] = False
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More output (-vv: debug).")
    ] = 0


# -- flattening ---------------------------------------------------------------------------


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
