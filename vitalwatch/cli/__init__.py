"""The ``vitalwatch`` command line: a thin dispatcher over one module per sub-command.

Each sub-command lives in its own module of this package, named after the command, with
``register(subparsers)`` (which sets ``func`` on its parser) so adding one never touches the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from vitalwatch import __version__

# Order is the order of ``vitalwatch --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "run",
    "demo",
    "station",
    "check_config",
    "decode",
    "simulate",
    "replay",
    "tail",
    "session",
    "status",
    "report",
    "export",
    "registry",
)

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every sub-command that is installed."""
    parser = argparse.ArgumentParser(
        prog="vitalwatch",
        description="Bedside vital-signs monitoring for ketamine chairs (secondary alarms over MQTT).",
    )
    parser.add_argument("--version", action="version", version=f"vitalwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module_name = f"vitalwatch.cli.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a command that is not part of this build
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    code: int = func(args)
    return code
