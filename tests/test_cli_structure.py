"""The shape of the command line: no import circle, small modules, light start, one definition
of each shared option."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from finalcopy.cli.app import app
from finalcopy.cli.options import OutputOptions, SshOptions, with_option_blocks

CLI = Path(__file__).resolve().parents[1] / "finalcopy" / "cli"
#: Options whose meaning is the command's own, so their help differs on purpose.
COMMAND_SPECIFIC = {"dry_run"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(CLI.parents[1]).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _cli_imports() -> dict[str, set[str]]:
    """Each module of finalcopy.cli → the finalcopy.cli modules it imports, anywhere in it."""
    modules = {_module_name(path): path for path in CLI.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_circle_in_the_cli() -> None:
    graph = _cli_imports()
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            pytest.fail("import circle: " + " → ".join([*trail[trail.index(name) :], name]))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert not any("finalcopy.cli.app" in targets for targets in graph.values())


def test_every_cli_module_is_under_400_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in CLI.rglob("*.py")}
    assert max(sizes.values()) < 400, sizes


def test_start_up_loads_only_what_the_command_needs() -> None:
    probe = (
        "import contextlib, io, sys\n"
        "from finalcopy.cli.app import main\n"
        "for argv in (['finalcopy', '--help'], ['finalcopy', 'copy', '--help'],"
        " ['finalcopy', 'run', '--help'], ['finalcopy', 'bench', '--help']):\n"
        "    sys.argv = argv\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main()\n"
        "heavy = ('asyncssh', 'anyio', 'rich.progress', 'finalcopy.engine',"
        " 'finalcopy.backends', 'finalcopy.finalize', 'finalcopy.hashing', 'blake3')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def _options(command: str) -> dict[str, Any]:
    """The options of ``command`` by name (typer vendors click: its classes are not ours)."""
    group: Any = typer.main.get_command(app)
    params = group.commands[command].params
    return {p.name: p for p in params if p.param_type_name == "option"}


def test_a_shared_option_is_the_same_in_every_command() -> None:
    commands = {name: _options(name) for name in ("copy", "verify", "run", "demo")}
    shared = (
        {
            name
            for options in commands.values()
            for name in options
            if sum(name in other for other in commands.values()) > 1
        }
        - COMMAND_SPECIFIC
        - {"help"}
    )
    assert {"jobs", "verify", "hash_name", "identity", "json_output", "verbose"} <= shared
    for name in sorted(shared):
        seen = {
            (tuple(o.opts), tuple(o.secondary_opts), o.help, o.default, o.envvar)
            for options in commands.values()
            if (o := options.get(name)) is not None
        }
        assert len(seen) == 1, f"--{name} differs between commands: {seen}"


@pytest.mark.parametrize("command", ["copy", "run"])
@pytest.mark.parametrize(
    ("option", "value"), [("--verify", "maybe"), ("--metadata", "some"), ("--ntfs-names", "x")]
)
def test_choices_are_refused_alike_by_copy_and_run(
    tmp_path: Path, command: str, option: str, value: str
) -> None:
    args = [command, str(tmp_path), str(tmp_path / "dst")] if command == "copy" else [command]
    result = CliRunner().invoke(app, [*args, option, value])
    assert result.exit_code == 2
    assert f"finalcopy: error: {option} '{value}': is not one of " in result.output


def test_option_blocks_reach_the_command_assembled() -> None:
    seen: list[object] = []

    @with_option_blocks
    def probe(name: str, *, output: OutputOptions, ssh: SshOptions) -> None:
        seen.extend([name, output, ssh])

    probe_app = typer.Typer()
    probe_app.command()(probe)
    args = ["n", "--json", "-vv", "--port", "2222", "--retries", "5"]
    result = CliRunner().invoke(probe_app, args, env={"NETWORK_TIMEOUT": "7"})
    assert result.exit_code == 0, result.output
    assert seen == [
        "n",
        OutputOptions(json_output=True, verbose=2),
        SshOptions(port=2222, retries=5, timeout=7.0),
    ]


def test_a_block_field_may_not_shadow_another_option() -> None:
    def clash(verbose: int, *, output: OutputOptions) -> None: ...

    with pytest.raises(TypeError, match="appears twice"):
        with_option_blocks(clash)


def test_loading_the_main_module_without_running_it_does_nothing() -> None:
    """Tools that load ``finalcopy.__main__`` under another name (process pools do, to find
    the parent's functions) must not start a command."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import runpy; runpy.run_module('finalcopy', run_name='loaded')"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (loaded.returncode, loaded.stdout, loaded.stderr) == (0, "", "")
