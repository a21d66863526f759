"""The ``wsss`` command line: a thin layer over the library.

Each ``*_cmds`` module owns a group of commands and exposes ``register(app)``.
"""

from __future__ import annotations

import errno
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

# Options that make a rerun resume where an interrupted command stopped (others just rerun).
RESUME_OPTIONS = {"train": ("--resume",)}


def _version(value: bool) -> None:
    if value:
        from wsss import __version__

        typer.echo(f"wsss {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Weakly-supervised semantic segmentation: image labels in, pixel masks out."""


def _register_all() -> None:
    from wsss.cli import (
        data_cmds,
        demo_cmds,
        eval_cmds,
        lpcam_cmds,
        maps_cmds,
        refine_cmds,
        run_cmds,
        saliency_cmds,
        segment_cmds,
        synth_cmds,
        train_cmds,
    )

    for module in (
        data_cmds,
        synth_cmds,
        eval_cmds,
        train_cmds,
        maps_cmds,
        lpcam_cmds,
        refine_cmds,
        segment_cmds,
        demo_cmds,
        run_cmds,
    ):
        module.register(app)
    saliency_cmds.register(app)


_register_all()


def _interrupted() -> None:
    from wsss.cli.options import resume_command

    command = sys.argv[1] if len(sys.argv) > 1 else ""
    again = resume_command(sys.argv, RESUME_OPTIONS.get(command, ()))
    err_console.print(
        f"[yellow]interrupted[/]: completed artefacts are kept; resume with: {escape(again)}",
        soft_wrap=True,
    )
    sys.exit(130)


def _os_error(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    if e.errno == errno.ENOSPC:
        return f"{where}no space left on the disk; free some space, then rerun to resume"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}cannot write there ({e.strerror}); choose another output path"
    return f"{where}{e.strerror or e}"


def main() -> None:
    """Console-script entry point: user errors become one red line and exit code 2."""
    try:
        app()
    except WsssError as e:
        # The message holds user text (paths, class names): no markup, and one line.
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        sys.exit(2)
    except OSError as e:
        err_console.print(f"[bold red]error:[/] {escape(_os_error(e))}", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as e:
        # typer turns Ctrl-C into a silent exit 130; say how to resume instead.
        exit_ = e.__context__
        if isinstance(exit_, typer.Exit) and isinstance(exit_.__cause__, KeyboardInterrupt):
            _interrupted()
        raise
