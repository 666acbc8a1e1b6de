"""``vitalwatch check-config PATH``: OK, or every problem with its key, exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vitalwatch.config import load_config
from vitalwatch.errors import ConfigError

EXIT_BAD_CONFIG = 2


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "check-config", help="validate a configuration file", description=__doc__
    )
    parser.add_argument("path", type=Path, help="the TOML configuration file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        load_config(args.path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_CONFIG
    print("OK")
    return 0
