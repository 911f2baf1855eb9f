"""The `streamgenre` command line: options -> config -> one library call -> a printed summary.

The only broad catch in the package lives here: a `StreamgenreError` becomes one line on stderr
and exit code 2; Ctrl-C exits 130. Heavy imports happen inside commands so `--help` is instant.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer

from streamgenre.errors import StreamgenreError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Train and run music-genre classifiers on MP3s streamed from WebDataset shards.",
)


def friendly_errors(command):
    """Turn domain errors into one line on stderr (exit 2) and Ctrl-C into exit 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except StreamgenreError as exn:
            typer.echo(f"error: {exn}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


# -- pack ------------------------------------------------------------------------------------
# (pack and info commands go here)


# -- train -----------------------------------------------------------------------------------
# (train command goes here)


# -- evaluate / predict ----------------------------------------------------------------------
# (evaluate and predict commands go here)


# -- bench -----------------------------------------------------------------------------------
# (bench command goes here)


# -- demo ------------------------------------------------------------------------------------
# (demo command goes here)


if __name__ == "__main__":
    sys.exit(app())
