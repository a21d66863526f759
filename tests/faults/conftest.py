"""Shared helpers of the planted-fault suite: run the console entry point as a user would."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from wsss.cli import main


@pytest.fixture
def run_cli(monkeypatch, capsys) -> Callable[[list[str]], tuple[int, str, str]]:
    """``run_cli(argv)`` → (exit code, stdout, stderr) of ``wsss argv…`` through ``main()``."""

    def run(argv: list[str]) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["wsss", *map(str, argv)])
        with pytest.raises(SystemExit) as info:
            main()
        captured = capsys.readouterr()
        return info.value.code, captured.out, captured.err

    return run
