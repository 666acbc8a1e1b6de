"""``vitalwatch run --config PATH``: the daemon, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from vitalwatch.config import load_config, unreadable_files
from vitalwatch.errors import ConfigError, StartupError
from vitalwatch.ops.daemon import run_daemon
from vitalwatch.ops.logconfig import configure_logging

EXIT_BAD_CONFIG = 2
# The configuration is fine but the daemon cannot start here and now (state directory held by
# another daemon, metrics port in use): one line saying why, never a traceback.
EXIT_CANNOT_START = 1


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "run", help="run the monitoring daemon", description=__doc__
    )
    parser.add_argument("--config", type=Path, required=True, help="the TOML configuration file")
    parser.add_argument(
        "--record",
        type=Path,
        metavar="DIR",
        help="record every device's raw bytes and the session's inputs for `vitalwatch replay --recording`",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        unreadable = unreadable_files(config)
        if unreadable:
            raise ConfigError(unreadable)
    except ConfigError as exc:
        print("vitalwatch: refusing to start, the configuration is invalid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    configure_logging(config.logging.level, config.logging.format)
    try:
        asyncio.run(run_daemon(config, record_dir=args.record, freeze_gc=True))
    except StartupError as exc:
        print(f"vitalwatch: cannot start: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    return 0
