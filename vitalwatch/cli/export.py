"""``vitalwatch export``: the de-identified session record, one row per session (JSON Lines or CSV),
or one FHIR R4 Bundle per session (``--format fhir``: NDJSON, one Bundle per line).

.. code-block:: text

    vitalwatch export --since DATE --out FILE [--format jsonl|csv|fhir] [--include-bed] [--anchor DATETIME]
                      [--db PATH | --config PATH]

``DATE`` is ``YYYY-MM-DD`` (UTC midnight) or an ISO date-time; sessions that *started* at or
after it are exported, oldest first. Rows carry no identifier: no session id, no bed, no
date (times are relative to the infusion start). ``--include-bed`` adds the bed (a location,
not a person) for a clinic's own audit; a registry needs none. Fields: docs/session-record.md.
``--out -`` writes to stdout. FHIR Bundles place the infusion start at ``--anchor`` (default
2000-01-01T00:00:00Z, a placeholder, not a date) and carry no bed (``--include-bed`` is refused
with ``fhir``); the mapping is in docs/interop.md. Exit 0 (also for zero sessions: an empty file,
or a CSV header); 2 for a bad date, anchor or format, or a database that cannot be read.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["database_path", "parse_since", "register", "run", "write_output"]

EXIT_OK = 0
EXIT_USAGE = 2
DEFAULT_STATE = Path("/var/lib/vitalwatch")


def register(sub: Any) -> None:
    """Add ``export`` to the ``vitalwatch`` command line."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "export",
        help="de-identified session rows for a registry (JSON Lines or CSV)",
        description="Write one de-identified row per session that started since DATE.",
    )
    parser.add_argument("--since", metavar="DATE", required=True, help="YYYY-MM-DD (UTC) or ISO date-time")
    parser.add_argument("--out", metavar="FILE", required=True, help="output file, or - for stdout")
    parser.add_argument(
        "--format",
        choices=("jsonl", "csv", "fhir"),
        default=None,
        help="default: from FILE's suffix (csv, else jsonl); fhir: one FHIR R4 Bundle per line",
    )
    parser.add_argument(
        "--anchor",
        metavar="DATETIME",
        help="fhir only: the instant the infusion start is placed at (default 2000-01-01T00:00:00Z)",
    )
    parser.add_argument("--include-bed", action="store_true", help="add the bed column (a location)")
    parser.add_argument("--db", metavar="PATH", type=Path, help="the session record (sessions.sqlite3)")
    parser.add_argument("--config", metavar="PATH", type=Path, help="daemon config: its [state] directory")
    parser.set_defaults(func=run)


def database_path(args: argparse.Namespace) -> Path | None:
    """``--db``, else ``{state.directory}/sessions.sqlite3`` of ``--config``, else the default state dir."""
    from vitalwatch.record.sessionlog import SESSIONS_DB_NAME

    if args.db is not None:
        return Path(args.db)
    if getattr(args, "config", None) is not None:
        from vitalwatch.config import load_config
        from vitalwatch.errors import ConfigError

        try:
            return load_config(args.config).state.directory / SESSIONS_DB_NAME
        except (ConfigError, OSError) as exc:
            print(f"vitalwatch: bad configuration {args.config}: {exc}", file=sys.stderr)
            return None
    return DEFAULT_STATE / SESSIONS_DB_NAME


def parse_since(text: str) -> datetime:
    """A date (UTC midnight) or ISO date-time (UTC when it names no zone); ValueError otherwise."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _anchor(args: argparse.Namespace, fmt: str) -> datetime | None:
    """The FHIR anchor (UTC); None, after one line on stderr, when the options do not fit."""
    from vitalwatch.record.fhir import DEFAULT_ANCHOR

    if fmt != "fhir":
        if args.anchor is not None:
            print("vitalwatch export: --anchor is for --format fhir", file=sys.stderr)
            return None
        return DEFAULT_ANCHOR
    if args.include_bed:
        print("vitalwatch export: --include-bed is not available with --format fhir", file=sys.stderr)
        return None
    if args.anchor is None:
        return DEFAULT_ANCHOR
    try:
        return parse_since(args.anchor)
    except ValueError:
        print(f"vitalwatch export: --anchor must be an ISO date-time, got {args.anchor!r}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    """Write the export; see the module docstring for exit codes."""
    from vitalwatch.record.export import export_row, load_session, sessions_since, summarise, write_export
    from vitalwatch.record.sessionlog import connect_readonly

    try:
        since = parse_since(args.since)
    except ValueError:
        print(
            f"vitalwatch export: --since must be YYYY-MM-DD or an ISO date-time, got {args.since!r}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    fmt = args.format or ("csv" if str(args.out).endswith(".csv") else "jsonl")
    anchor = _anchor(args, fmt)
    if anchor is None:
        return EXIT_USAGE
    path = database_path(args)
    if path is None:
        return EXIT_USAGE
    try:
        conn = connect_readonly(path)
        try:
            sessions = [load_session(conn, sid) for sid in sessions_since(conn, since)]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        print(f"vitalwatch export: cannot read the session record {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if fmt == "fhir":
        from vitalwatch.record.fhir import write_bundles

        text = write_bundles(sessions, anchor=anchor)
    else:
        rows = [export_row(summarise(data), include_bed=args.include_bed) for data in sessions]
        text = write_export(rows, fmt, include_bed=args.include_bed)
    return write_output(text, args.out, command="vitalwatch export", summary=f"{len(sessions)} session(s)")


def write_output(text: str, out: str, *, command: str, summary: str) -> int:
    """``text`` to stdout (``-``) or to the file ``out`` (saying ``summary -> out``); the exit code."""
    if out == "-":
        sys.stdout.write(text)
        return EXIT_OK
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"{command}: cannot write {out}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{summary} -> {out}", file=sys.stderr)
    return EXIT_OK
