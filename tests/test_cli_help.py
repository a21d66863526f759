"""Consistency of the command line: --version, --set, examples, enumerated choices."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

import wsss
from wsss.cli import app


def _commands() -> dict[str, object]:
    root = typer.main.get_command(app)
    found = {}

    def walk(group, prefix: str) -> None:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):  # a group
                walk(command, f"{prefix}{name} ")
            else:
                found[f"{prefix}{name}"] = command

    walk(root, "")
    return found


COMMANDS = sorted(_commands())


def _help(command: str) -> str:
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_version_comes_from_the_package():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"wsss {wsss.__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_has_an_example_and_cites_no_missing_file(command):
    text = _help(command)
    assert "Example" in text and f"wsss {command}" in text
    assert not re.search(r"\b[A-Z][A-Z_]+\.md\b", text), "cites a document not in the repository"


@pytest.mark.parametrize("command", ["train", "demo", "synth", "eval"])
def test_commands_with_settings_take_set(command):
    assert "--set" in _help(command) and "KEY=VALUE" in _help(command)


def test_choices_are_listed():
    assert "voc|coco|folder" in _help("train") and "voc|coco|folder" in _help("eval")
    assert "vanilla|puzzle|occse|poc|pnoc" in _help("train")
    assert "vanilla|puzzle|occse|poc|pnoc" in _help("demo")
    assert "jpg|png" in _help("synth")


def test_workers_means_background_processes_everywhere():
    for command in ("train", "synth", "eval"):
        assert "Background worker processes" in _help(command)
    assert "--classes" not in _help("synth")  # one meaning: which classes get maps


@pytest.mark.parametrize("command", ["lpcam fit", "lpcam maps", "maps", "cams"])
def test_map_commands_take_set(command):
    assert "--set" in _help(command) and "KEY=VALUE" in _help(command)
