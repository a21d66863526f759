"""The ``wsss`` command line: a thin layer over the library.

Each ``*_cmds`` module owns a group of commands and exposes ``register(app)``.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from wsss.errors import WsssError

app = typer.Typer(
    name="wsss",
    help="Weakly-supervised semantic segmentation: image labels in, pixel masks out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


def _register_all() -> None:
    from wsss.cli import (
        data_cmds,
        demo_cmds,
        eval_cmds,
        lpcam_cmds,
        maps_cmds,
        synth_cmds,
        train_cmds,
    )

    for module in (data_cmds, synth_cmds, eval_cmds, train_cmds, maps_cmds, lpcam_cmds, demo_cmds):
        module.register(app)


_register_all()


def main() -> None:
    """Console-script entry point: user errors become one red line and exit code 2."""
    try:
        app()
    except WsssError as e:
        # The message holds user text (paths, class names): no markup, and one line.
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: completed artefacts are kept; rerun to resume")
        sys.exit(130)
