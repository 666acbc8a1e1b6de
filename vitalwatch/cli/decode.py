"""``vitalwatch decode``: run one driver over a capture file and print its events as JSON lines.

Why: a field engineer with a laptop, a serial capture (``cat /dev/ttyUSB0 > bed3.txt``) and a
question ("does VitalWatch understand this monitor?") gets the answer without a config file,
a broker or a daemon. The output is the documented contract (one JSON object per line)::

    {"event": "observation", "kind": K, "value": number|null, "unit": U, "mdc": int|null,
     "device_time": ISO|null}
    {"event": "status", "code": C, "active": bool, ...detail}
    {"event": "problem", "reason": R, "length": N}          (never the bytes themselves)

Counts go to stderr at the end, so stdout stays pure JSON lines for ``jq``. Exit 0 when the
file was read (even if every line was a problem: that is the answer), 2 for an unknown driver,
a bad ``--option`` or an unreadable file, with one line on stderr saying which. The driver runs
in the same :class:`~vitalwatch.link.driver_guard.DriverGuard` as in the daemon, so bytes that
make a driver fail give a ``driver_fault:<type>`` problem (and the driver is rebuilt at once),
never a traceback.

Binary captures are read as bytes; ``--hex`` reads a hex dump instead (see :func:`hex_dump_bytes`).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Any, BinaryIO

from vitalwatch import strict_json
from vitalwatch.drivers import DRIVERS, Driver, make_driver
from vitalwatch.drivers.base import DeviceClocked
from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Event, Observation, event_to_json_dict
from vitalwatch.link.driver_guard import DriverGuard

__all__ = ["hex_dump_bytes", "parse_option_value", "register", "run"]

EXIT_OK = 0
EXIT_USAGE = 2

# Big enough that a day-long capture is read in few calls.
CHUNK_BYTES = 4096
# Bytes reach the driver in pieces this far apart in virtual time, as from a serial port that
# the link reads a few dozen times a second.
PIECE_S = 0.04


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``decode`` to the ``vitalwatch`` command line."""
    parser = subparsers.add_parser(
        "decode",
        help="decode a capture file with one driver and print JSON lines",
        description="Feed a capture file (or stdin) to a driver and print each event as one JSON object.",
    )
    parser.add_argument(
        "--driver", required=True, metavar="NAME", help=f"driver name ({', '.join(sorted(DRIVERS))})"
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="driver constructor option (repeatable); VALUE is read as int, float, true/false or text",
    )
    parser.add_argument(
        "--hex",
        action="store_true",
        help="the file is a hex dump: pairs of hex digits separated by blanks, '#' starts a comment",
    )
    parser.add_argument("file", nargs="?", default="-", metavar="FILE", help="capture file, or - for stdin")
    parser.set_defaults(func=run)


def parse_option_value(text: str) -> int | float | bool | str:
    """``"512"`` -> 512, ``"0.5"`` -> 0.5, ``"true"``/``"false"`` -> bool, anything else stays text."""
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_options(items: list[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` items as constructor keyword arguments (shared with simulate)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise ValueError(f"bad --option {item!r} (expected KEY=VALUE)")
        options[key] = parse_option_value(value)
    return options


def _error(message: str) -> int:
    print(f"vitalwatch decode: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    """Decode ``args.file`` with ``args.driver``; returns the exit code."""
    try:
        options = parse_options(args.option)
    except ValueError as exc:
        return _error(str(exc))
    try:
        probe = make_driver(args.driver, **options)  # bad options are exit 2 here, not a fault later
    except KeyError as exc:
        return _error(str(exc.args[0]) if exc.args else f"unknown driver {args.driver!r}")
    except ImportError as exc:
        return _error(f"driver {args.driver!r} is not available in this build ({exc})")
    except (TypeError, ValueError) as exc:
        return _error(f"bad option for driver {args.driver!r}: {exc}")

    # The daemon's own restart backoff, in the capture's virtual time: a driver that fails on
    # some bytes shows the faults and the skipped bytes the daemon would have had.
    driver = DriverGuard(lambda: make_driver(args.driver, **options))
    counts = {"observations": 0, "statuses": 0, "problems": 0}
    rate = arrival_rate(probe)
    try:
        if args.file == "-":
            stream: BinaryIO = sys.stdin.buffer
            if args.hex:
                stream = io.BytesIO(_hex_or_fail(stream.read()))
            _decode_stream(driver, stream, counts, rate)
        else:
            with open(args.file, "rb") as raw:
                stream = io.BytesIO(_hex_or_fail(raw.read())) if args.hex else raw
                _decode_stream(driver, stream, counts, rate)
    except NotHexError as exc:
        return _error(str(exc))
    except BrokenPipeError:
        # The reader went away (``| head``): not an error. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        return _error(f"cannot read {args.file}: {exc.strerror or exc}")
    print(
        f"observations={counts['observations']} statuses={counts['statuses']} problems={counts['problems']}",
        file=sys.stderr,
    )
    return EXIT_OK


def hex_dump_bytes(text: bytes) -> bytes:
    """The bytes a hex dump spells: every blank-separated token of exactly two hex digits.

    Why: binary vectors and sniffer logs are often kept as text (``3E 05 02 01 BA  # cuff``).
    Text after ``#`` is a comment; other tokens (offsets like ``0010:``, placeholders like
    ``ZZ``) are skipped, so a dump with an address column still reads.
    """
    out = bytearray()
    for line in text.decode("ascii", "replace").splitlines():
        for token in line.partition("#")[0].split():
            if len(token) == 2 and all(c in "0123456789abcdefABCDEF" for c in token):
                out.append(int(token, 16))
    return bytes(out)


class NotHexError(ValueError):
    """``--hex`` was given but the input holds no pair of hex digits."""


def _hex_or_fail(text: bytes) -> bytes:
    data = hex_dump_bytes(text)
    if not data and text.strip():
        raise NotHexError("--hex: the input holds no hex byte pairs (like '3E 05 02'); a binary capture?")
    return data


def arrival_rate(driver: Driver) -> float:
    """Bytes per second the capture arrived at: the device's own pace where its protocol has one.

    A Nonin sends 75 five-byte frames a second (375 B/s) on a 9600-baud line (960 B/s); pacing its
    capture by the line rate would squeeze 10 s of data into 4 s and the once-a-second report
    would show fewer values than the device gave. Other families send in bursts at the line rate.
    """
    if isinstance(driver, DeviceClocked):
        return driver.device_byte_rate()
    return type(driver).serial.bytes_per_second()


def _decode_stream(driver: DriverGuard, stream: BinaryIO, counts: dict[str, int], rate: float) -> None:
    """Feed ``stream`` with the virtual time each byte would have arrived at, then end of input.

    Virtual time starts at 0 and advances by the byte count over ``rate``; timers do not fire
    (nothing is sent to a device from a file).
    """
    _emit(driver.start(0.0), counts)
    piece = max(1, round(rate * PIECE_S))
    offset = 0
    while chunk := stream.read(CHUNK_BYTES):
        for start in range(0, len(chunk), piece):
            part = chunk[start : start + piece]
            _emit(driver.feed(part, offset / rate), counts)
            offset += len(part)
    _emit(driver.feed_eof(), counts)


def _emit(events: list[Event], counts: dict[str, int]) -> None:
    out = sys.stdout
    for event in events:
        match event:
            case Observation():
                counts["observations"] += 1
            case DeviceStatus():
                counts["statuses"] += 1
            case DecodeProblem():
                counts["problems"] += 1
        out.write(strict_json.dumps(event_to_json_dict(event), what="decode") + "\n")
