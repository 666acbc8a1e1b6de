"""``vitalwatch report``: the PNG plot and one-page HTML summary of one session.

.. code-block:: text

    vitalwatch report --session ID --out DIR [--db PATH | --config PATH]
    vitalwatch report --bed BED --out DIR [...]       (the last session of that bed)

Reads the session record (``{state.directory}/sessions.sqlite3``, read-only, so it is safe
while the daemon runs) and writes ``DIR/{session}.png`` and ``DIR/{session}.html``. Exit 0
on success; 2 for an unknown session or bed, or a database that cannot be read (one line on
stderr saying which).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

from vitalwatch.cli.export import database_path

__all__ = ["register", "run"]

EXIT_OK = 0
EXIT_USAGE = 2


def register(sub: Any) -> None:
    """Add ``report`` to the ``vitalwatch`` command line."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "report",
        help="plot and summarise one session (PNG + HTML)",
        description="Write a PNG plot and a one-page HTML summary of one session from the session record.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--session", metavar="ID", help="a session id, e.g. chair-2-20250304-1")
    which.add_argument("--bed", metavar="BED", help="the most recent session of this bed")
    parser.add_argument("--out", metavar="DIR", type=Path, required=True, help="directory for the files")
    parser.add_argument("--db", metavar="PATH", type=Path, help="the session record (sessions.sqlite3)")
    parser.add_argument("--config", metavar="PATH", type=Path, help="daemon config: its [state] directory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the report; see the module docstring for exit codes."""
    from vitalwatch.record.export import last_session_of_bed, load_session
    from vitalwatch.record.sessionlog import connect_readonly

    path = database_path(args)
    if path is None:
        return EXIT_USAGE
    try:
        conn = connect_readonly(path)
    except sqlite3.Error as exc:
        print(f"vitalwatch report: cannot read the session record {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        session_id = args.session
        if session_id is None:
            session_id = last_session_of_bed(conn, args.bed)
            if session_id is None:
                print(f"vitalwatch report: no session of bed {args.bed!r} in {path}", file=sys.stderr)
                return EXIT_USAGE
        try:
            data = load_session(conn, session_id)
        except KeyError:
            print(f"vitalwatch report: no session {session_id!r} in {path}", file=sys.stderr)
            return EXIT_USAGE
    except sqlite3.Error as exc:
        print(f"vitalwatch report: cannot read the session record {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        conn.close()
    from vitalwatch.record.report import write_report

    try:
        png, page = write_report(data, args.out)
    except OSError as exc:
        print(f"vitalwatch report: cannot write to {args.out}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(png)
    print(page)
    return EXIT_OK
