"""The ``finalcopy`` command line: creates the typer app and registers the commands.

Each command lives in its own module under :mod:`finalcopy.cli.commands`, the
options they share in :mod:`finalcopy.cli.options`, exit codes and signal
handling in :mod:`finalcopy.cli.runtime`, and the rendering in
:mod:`finalcopy.cli.render`. Nothing imports this module back.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup
from typer.main import get_command_from_info
from typer.models import CommandInfo

from finalcopy import __version__
from finalcopy.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE

COMMANDS = {
    "copy": "finalcopy.cli.commands.copy:copy_command",
    "verify": "finalcopy.cli.commands.verify:verify_command",
    "run": "finalcopy.cli.commands.run:run_command",
    "demo": "finalcopy.cli.commands.demo:demo_command",
    "bench": "finalcopy.cli.commands.bench:bench_command",
}
"""Each command, in the order help lists them, and where its function lives.

A command's module is imported, and its options built, only when that
command runs or a help lists it: ``finalcopy copy`` never pays for ``run`` or
``bench`` (their imports and options were a visible share of its start-up).
"""


def _typed_value(opts: list[str], argv: list[str]) -> str | None:
    """The value typed after one of ``opts`` (``--opt V`` or ``--opt=V``), the last one wins."""
    value = None
    for i, arg in enumerate(argv):
        for opt in opts:
            if arg == opt and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(opt + "=") and opt.startswith("--"):
                value = arg[len(opt) + 1 :]
            elif arg.startswith(opt) and len(opt) == 2 and len(arg) > 2 and arg[1] != "-":
                value = arg[2:]
    return value


def usage_message(exc: Any, argv: list[str]) -> str:
    """A parse error of typer/click in the one style: ``<what> '<value>': <why>``."""
    param = getattr(exc, "param", None)
    message = str(getattr(exc, "message", "") or exc.format_message())
    if param is None or not hasattr(exc, "param_hint"):
        return (message[:1].lower() + message[1:]).rstrip(".")
    if param.param_type_name != "option":
        name = str(param.name or "argument").upper()
        return f"{name}: {message[:1].lower() + message[1:]}".rstrip(".")
    what = "/".join(param.opts)
    why = message.removeprefix("Value error, ").rstrip(".")
    value = _typed_value(list(param.opts) + list(param.secondary_opts), argv)
    envvar = param.envvar if isinstance(param.envvar, str) else None
    if value is None and envvar and os.environ.get(envvar):
        what, value = f"{what} (from {envvar})", os.environ[envvar]
    if value is None:
        return f"{what}: {why}"
    why = why.removeprefix(f"'{value}': ").removeprefix(f"'{value}' ")
    return f"{what} '{value}': {why[:1].lower() + why[1:]}"


class LazyCommands(MutableMapping[str, Any]):
    """The group's commands by name, each built from :data:`COMMANDS` when first looked up.

    ``built``: the commands typer already built for the group, kept as they are.
    """

    def __init__(self, build: Callable[[str], Any], built: Mapping[str, Any]) -> None:
        self._build = build
        self._built: dict[str, Any] = dict(built)

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            if name not in COMMANDS:
                raise KeyError(name)
            self._built[name] = self._build(name)
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._built[name]

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (name for name in self._built if name not in COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS.keys() | self._built.keys())


def _build_command(name: str, markup_mode: Any) -> Any:
    """The click command of ``name``: its module imported, its options built by typer."""
    module, _, function = COMMANDS[name].partition(":")
    callback = getattr(importlib.import_module(module), function)
    return get_command_from_info(
        CommandInfo(name=name, callback=callback),
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=markup_mode,
    )


class FinalcopyGroup(TyperGroup):
    """typer's group, with its parse errors in finalcopy's one error style (exit 2).

    Its commands are built as they are looked up (:data:`COMMANDS`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = LazyCommands(
            lambda name: _build_command(name, self.rich_markup_mode), self.commands
        )

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # names only: nothing is built to be listed

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **kwargs: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **kwargs)
        from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
        from typer.exceptions import Abort

        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, prog_name, complete_var, False, windows_expand_args, **kwargs)
        except NoArgsIsHelpError as exc:
            from typer import rich_utils

            rich_utils.rich_format_error(exc)
            sys.exit(exc.exit_code)
        except UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            typer.echo(f"finalcopy: error: {usage_message(exc, argv)}{hint}", err=True)
            sys.exit(EXIT_USAGE)
        except ClickException as exc:
            typer.echo(f"finalcopy: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except Abort:
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="finalcopy",
    help=(
        "Copy finished work to its final storage and prove the copy byte-identical.\n\n"
        "Destinations: a local path, an NTFS/FUSE mount (detected), or "
        # Escaped: rich would read "[user@]" as markup and drop it.
        "sftp://\\[user@]host[:port]/path and user@host:path."
    ),
    cls=FinalcopyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"finalcopy {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Copy finished work to its final storage and prove the copy byte-identical."""


def main() -> Any:
    """Console-script entry point."""
    try:
        return app()
    except BrokenPipeError:
        # The reader went away (`finalcopy copy … | head`): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_FAILED)
