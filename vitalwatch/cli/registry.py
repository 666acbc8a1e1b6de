"""``vitalwatch registry``: the regional session registry (its own process, on a central server).

.. code-block:: text

    vitalwatch registry --db URL [--host H] [--port P] [--username U] [--password-file F]
                        [--ca-file F [--cert-file F --key-file F]] [--client-id ID] [--topic-prefix P]
                        [--metrics-port N] [--listen HOST:PORT|off]
    vitalwatch registry page --db URL [--listen HOST:PORT]
    vitalwatch registry export --db URL --out FILE [--format csv|jsonl] [--site S] [--since-month YYYY-MM]
                               [--include-bed]
    vitalwatch registry migrate --db URL

``URL`` is ``postgresql://user@host/db`` (the password from ``~/.pgpass`` or ``PGPASSFILE``) or a
SQLite file path, the embedded default for a single clinic. The database is migrated at start.
The registry serves its page (per clinic and month, docs/registry.md) on ``--listen``, loopback
by default; ``registry page`` serves only the page (e.g. from a read replica).
The export is the regional data set: one de-identified row per session with its ``site`` and
``month`` first (docs/registry.md). Exit 0; 2 for bad options or a database that cannot be opened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run", "run_export", "run_migrate", "run_page"]

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
DEFAULT_LISTEN = "127.0.0.1:8090"
_MONTH = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")


def _db_option(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--db",
        metavar="URL",
        required=required,
        help="postgresql://user@host/db, or a SQLite file path (one clinic)",
    )


def _listen_option(parser: argparse.ArgumentParser, extra: str) -> None:
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"serve the registry page here (default {DEFAULT_LISTEN}: this machine only; put a reverse"
        f" proxy with TLS and a login in front for anyone else){extra}",
    )


def register(sub: Any) -> None:
    """Add ``registry`` (and its ``export`` and ``migrate``) to the ``vitalwatch`` command line."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "registry",
        help="the regional session registry: store every site's session records, export them",
        description="Subscribe to the session records of every site, store them once, receipt each.",
    )
    # Not required by argparse here, or `registry export --db X` would ask for a second --db.
    _db_option(parser, required=False)
    parser.add_argument("--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    parser.add_argument("--username", help="broker user name (the central ACL's 'registry')")
    parser.add_argument("--password-file", type=Path, help="file whose first line is the broker password")
    parser.add_argument("--ca-file", type=Path, help="TLS: the CA that signed the broker")
    parser.add_argument("--cert-file", type=Path, help="TLS: client certificate (CN = user name)")
    parser.add_argument("--key-file", type=Path, help="TLS: client key")
    parser.add_argument("--client-id", default=None, help="MQTT client id (default vitalwatch-registry)")
    parser.add_argument("--topic-prefix", default="vitalwatch/v1", help="default vitalwatch/v1")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1:PORT")
    _listen_option(parser, "; 'off': no page")
    parser.set_defaults(func=run)
    commands = parser.add_subparsers(dest="registry_command", metavar="{export,migrate,page}")
    page = commands.add_parser("page", help="serve only the registry page (e.g. from a read replica)")
    _db_option(page)
    _listen_option(page, "")
    page.set_defaults(func=run_page)
    export = commands.add_parser("export", help="write the regional data set (CSV or JSON Lines)")
    _db_option(export)
    export.add_argument("--out", required=True, metavar="FILE", help="output file, or - for stdout")
    export.add_argument("--format", choices=("csv", "jsonl"), help="default: from FILE's suffix")
    export.add_argument("--site", help="only this site")
    export.add_argument("--since-month", metavar="YYYY-MM", help="only sessions from this month on")
    export.add_argument("--include-bed", action="store_true", help="add the bed column (a location)")
    export.set_defaults(func=run_export)
    migrate = commands.add_parser("migrate", help="bring the database schema up to date, then exit")
    _db_option(migrate)
    migrate.set_defaults(func=run_migrate)


def _open(url: str) -> Any:
    """The migrated database, or None after one line on stderr."""
    from vitalwatch.registry.database import open_registry

    try:
        db = open_registry(url)
        db.migrate()
    except Exception as exc:  # sqlite3.Error, psycopg.Error, a missing driver: say it, no traceback
        print(f"vitalwatch registry: cannot open {_safe(url)}: {exc}", file=sys.stderr)
        return None
    return db


def _open_existing(url: str) -> Any:
    """The database as it is, not migrated (a read replica cannot be), or None after one line on
    stderr: missing, unreadable, or at another schema version than this VitalWatch's."""
    from vitalwatch.registry.database import migrations, open_registry

    if (
        not url.startswith(("postgresql://", "postgres://"))
        and not Path(url.removeprefix("sqlite://")).is_file()
    ):
        print(f"vitalwatch registry page: no database at {url}", file=sys.stderr)
        return None
    try:
        db = open_registry(url)
        have, need = db.version(), len(migrations(db.dialect))
    except Exception as exc:  # as in _open
        print(f"vitalwatch registry page: cannot open {_safe(url)}: {exc}", file=sys.stderr)
        return None
    if have != need:
        db.close()
        print(
            f"vitalwatch registry page: {_safe(url)} has schema version {have}, this version needs {need}"
            " (vitalwatch registry migrate, on the primary)",
            file=sys.stderr,
        )
        return None
    return db


def _safe(url: str) -> str:
    """The URL without a password, should one have been given in it."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def run_migrate(args: argparse.Namespace) -> int:
    db = _open(args.db)
    if db is None:
        return EXIT_USAGE
    print(f"registry schema version {db.version()} ({db.dialect})", file=sys.stderr)
    db.close()
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    """Write the regional data set; see the module docstring for exit codes."""
    from vitalwatch.cli.export import write_output
    from vitalwatch.record.export import CSV_FIELDS, write_export

    if args.since_month is not None and not _MONTH.match(args.since_month):
        print(
            f"vitalwatch registry export: --since-month must be YYYY-MM, got {args.since_month!r}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    fmt = args.format or ("csv" if str(args.out).endswith(".csv") else "jsonl")
    db = _open(args.db)
    if db is None:
        return EXIT_USAGE
    try:
        rows = []
        for rec in db.records(site=args.site, since_month=args.since_month):
            row = {"site": rec.site, "month": rec.month, **rec.row}
            if args.include_bed:
                row["bed"] = rec.bed
            rows.append(row)
    finally:
        db.close()
    if fmt == "csv":
        # Clinics may run different versions: CSV has this version's columns (a field a newer
        # gateway added is in the JSON Lines export), a field an older one lacks stays empty.
        known = {*CSV_FIELDS, "alarms", "nurse_events", "site", "month", "bed"}
        rows = [{k: v for k, v in row.items() if k in known} for row in rows]
    text = write_export(rows, fmt, include_bed=args.include_bed, leading=("site", "month"))
    return write_output(
        text, args.out, command="vitalwatch registry export", summary=f"{len(rows)} record(s)"
    )


def run(args: argparse.Namespace) -> int:
    """The registry process, until SIGTERM or SIGINT."""
    from vitalwatch.config import MqttConfig, TlsConfig
    from vitalwatch.ops.logconfig import configure_logging
    from vitalwatch.registry.service import RegistryService

    if args.db is None:
        print("vitalwatch registry: --db URL is required", file=sys.stderr)
        return EXIT_USAGE
    if (args.cert_file is None) != (args.key_file is None):
        print("vitalwatch registry: --cert-file and --key-file go together", file=sys.stderr)
        return EXIT_USAGE
    listen = None
    if args.listen != "off":
        listen = _listen(args.listen)
        if listen is None:
            return EXIT_USAGE
    tls = None
    if args.ca_file is not None or args.cert_file is not None:
        tls = TlsConfig(ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file)
    mqtt = MqttConfig(
        host=args.host,
        port=args.port,
        client_id=args.client_id,
        username=args.username,
        password_file=args.password_file,
        topic_prefix=args.topic_prefix.strip("/"),
        tls=tls,
    )
    configure_logging("info", "auto")
    db = _open(args.db)
    if db is None:
        return EXIT_USAGE
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr="127.0.0.1")

    async def main() -> None:
        stop = _stop_on_signals()
        async with contextlib.AsyncExitStack() as stack:
            if listen is not None:
                await _serve_page(stack, args.db, *listen)
            await RegistryService(db, mqtt).run(stop)

    try:
        asyncio.run(main())
    except OSError as exc:  # the page's port taken, or its address not ours
        print(f"vitalwatch registry: cannot serve the page on {args.listen}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        db.close()
    return EXIT_OK


def _listen(text: str) -> tuple[str, int] | None:
    from vitalwatch.cli.station import parse_listen

    try:
        return parse_listen(text)
    except ValueError as exc:
        print(f"vitalwatch registry: {exc}", file=sys.stderr)
        return None


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve_page(stack: contextlib.AsyncExitStack, url: str, host: str, port: int) -> None:
    """The page on its own database connection (the ingest's stays free), until the stack closes."""
    from vitalwatch.http_get import listen_url
    from vitalwatch.registry.web import serve_registry_page

    page = await stack.enter_async_context(serve_registry_page(url, host, port))
    print(f"registry page on {listen_url(host, page.port)}", file=sys.stderr, flush=True)


def run_page(args: argparse.Namespace) -> int:
    """Only the page, until SIGTERM or SIGINT: for a read replica, or a look at a copy."""
    from vitalwatch.ops.logconfig import configure_logging

    listen = _listen(args.listen)
    if listen is None:
        return EXIT_USAGE
    configure_logging("warning", "console", stream=sys.stderr)
    db = _open_existing(args.db)
    if db is None:
        return EXIT_USAGE
    db.close()

    async def main() -> None:
        stop = _stop_on_signals()
        async with contextlib.AsyncExitStack() as stack:
            await _serve_page(stack, args.db, *listen)
            await stop.wait()

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"vitalwatch registry page: cannot serve on {args.listen}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK
