"""`fleetsim` command line. Input errors print one line and exit 2; a traceback is a bug.

This module stays light: `fleetsim --version` answers without importing the simulator; everything else
builds the Typer application (`sim.cli.commands`), whose commands import what they need when they run."""

from __future__ import annotations

import sys
from typing import Any


def main(argv: list[str] | None = None) -> None:
    """The console script (see `sim.cli.commands.main`)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        from importlib.metadata import version

        print(f"fleetsim {version('fleetsim')}")
        sys.exit(0)
    try:  # (the handlers `app_main` installs are not in place while its imports run: a Ctrl-C there ends the same way)
        from sim.cli.commands import main as app_main
    except KeyboardInterrupt:
        print("error: interrupted; nothing written", file=sys.stderr)
        sys.exit(130)
    app_main(argv)


def __getattr__(name: str) -> Any:
    if name == "app":
        from sim.cli.commands import app

        return app
    raise AttributeError(f"module 'sim.cli' has no attribute {name!r}")


__all__ = ["app", "main"]
