"""The `pendant` root: every listed command loads, and every command and sub-command teaches its use with
examples in `--help` (issue 6: hard to misuse, `--help` that teaches)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pendant_tools.cli import _SUBCOMMANDS, main


def _commands(group: click.Group, ctx: click.Context, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, f"`pendant {' '.join((*path, name))}` is listed but does not load"
        found.append((*path, name))
        if isinstance(command, click.Group):
            found += _commands(command, click.Context(command, info_name=name, parent=ctx), (*path, name))
    return found


ALL_COMMANDS = _commands(main, click.Context(main, info_name="pendant"), ())


def test_every_registered_command_is_listed_and_loads() -> None:
    assert {path[0] for path in ALL_COMMANDS} == set(_SUBCOMMANDS)


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=" ".join)
def test_help_gives_examples(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="pendant")
    assert result.exit_code == 0, result.output
    # The usage line names the command too: only lines after "Example:" or "Examples:" count.
    parts = re.split(r"\bExamples?:", result.output, maxsplit=1)
    examples = parts[1] if len(parts) == 2 else ""
    assert examples, f"`pendant {' '.join(path)} --help` has no Examples section:\n{result.output}"
    assert "pendant " + " ".join(path) in examples, (
        f"the examples of `pendant {' '.join(path)} --help` do not show its own use:\n{result.output}"
    )


def test_an_unknown_command_is_one_clear_error() -> None:
    result = CliRunner().invoke(main, ["flsh"])
    assert result.exit_code == 2
    assert "No such command 'flsh'" in result.output


def test_version_names_the_installed_release() -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"pendant {project['project']['version']}\n"
