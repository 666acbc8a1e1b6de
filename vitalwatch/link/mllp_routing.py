"""Who sent an HL7 message, and which configured device that is: the listener's routing keys.

A networked monitor (or a gateway speaking for several) connects to the MLLP listener as a TCP
client, so the connection says nothing about the bed. Each message says it itself, in one of two
places IHE PCD-01 fills:

- MSH-3, the sending application, as ``<name>^<EUI-64>^EUI-64``: the device's 64-bit IEEE id,
  which stays with the monitor wherever it is wheeled;
- PV1-3, the assigned patient location, as ``<point of care>^<room>^<bed>...``: the place, which
  stays with the chair whatever monitor stands there.

Both are read here from the raw text, in time linear in the message (only the MSH line and the
PV1 line are split), without the full HL7 parse the driver does afterwards. Nothing here touches
PID or any other patient segment. Also here: the ``mllp://host:port`` URL form, because the
configuration checks it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vitalwatch.drivers.hl7 import Delimiters, unescape

__all__ = [
    "SenderKeys",
    "is_mllp_url",
    "normalise_eui64",
    "normalise_location",
    "parse_mllp_url",
    "sender_keys",
]

MLLP_SCHEME = "mllp://"
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$")
_HEX16 = re.compile(r"^[0-9A-F]{16}$")
# A location or EUI-64 longer than this is not one (and is cut in logs).
MAX_KEY_CHARS = 120


def is_mllp_url(url: str) -> bool:
    """Whether a device ``url`` names an MLLP listener rather than a serial port."""
    return url.lower().startswith(MLLP_SCHEME)


def parse_mllp_url(url: str) -> tuple[str, int]:
    """``mllp://HOST:PORT`` -> (host, port); ValueError saying what is wrong otherwise.

    HOST is an address to listen on (``0.0.0.0`` for every interface, ``127.0.0.1`` for this
    machine only, ``[::]`` for IPv6) or a host name; PORT is 1-65535 (2575 is HL7's registered
    port), or 0 for any free port (tests; the configuration refuses it).
    """
    if not is_mllp_url(url):
        raise ValueError(f"must start with {MLLP_SCHEME}")
    match = _HOST_PORT.match(url[len(MLLP_SCHEME) :])
    if match is None:
        raise ValueError(f"must be {MLLP_SCHEME}HOST:PORT (e.g. {MLLP_SCHEME}0.0.0.0:2575), got {url!r}")
    port = int(match["port"])
    if port > 65535:
        raise ValueError(f"port must be 1-65535, got {port}")
    return match["host"].strip("[]"), port


def normalise_eui64(text: str) -> str | None:
    """16 hex digits, upper case, separators (``-`` ``:`` space) removed; None when it is not one."""
    value = re.sub(r"[-: ]", "", text.strip()).upper()
    return value if _HEX16.match(value) else None


def normalise_location(text: str, component: str = "^") -> str | None:
    """A PV1-3 location as comparable text: components trimmed, trailing empty ones dropped.

    ``"CHAIR^^1"`` and ``"CHAIR^^1^^"`` are the same place; None for an empty location.
    """
    parts = [p.strip() for p in text.split(component)]
    while parts and not parts[-1]:
        parts.pop()
    if not parts:
        return None
    return "^".join(parts)


@dataclass(frozen=True, slots=True)
class SenderKeys:
    """What one message says about its sender (either may be missing)."""

    eui64: str | None
    location: str | None


def _field(line: str, d: Delimiters, index: int) -> str:
    """Field ``index`` of a segment line (the segment name is field 0; MSH is shifted by one)."""
    fields = line.split(d.field, index + 1)
    return fields[index] if index < len(fields) else ""


def sender_keys(payload: bytes, encoding: str = "utf-8") -> SenderKeys | None:
    """The EUI-64 in MSH-3 and the location in PV1-3 of one message; None when it has no MSH."""
    text = payload.decode(encoding, errors="replace").replace("\r\n", "\r").replace("\n", "\r")
    text = text.strip(" \t\r\x0c")
    d = Delimiters.from_msh(text)
    if d is None:
        return None
    eui64: str | None = None
    location: str | None = None
    msh = text.split("\r", 1)[0]
    # MSH-1 is the field separator itself, so MSH-3 is the third split part (index 2).
    hd = _field(msh, d, 2).split(d.component)
    if len(hd) >= 3 and hd[2].strip().upper() == "EUI-64" and len(hd[1]) <= MAX_KEY_CHARS:
        eui64 = normalise_eui64(unescape(hd[1], d, encoding))
    start = text.find("\rPV1" + d.field)
    if start >= 0:
        end = text.find("\r", start + 1)
        pv1 = text[start + 1 : end if end >= 0 else len(text)]
        raw = _field(pv1, d, 3).split(d.repetition, 1)[0]
        if len(raw) <= MAX_KEY_CHARS:
            parts = [unescape(p, d, encoding) for p in raw.split(d.component)]
            location = normalise_location("^".join(p.replace("^", " ") for p in parts))
    return SenderKeys(eui64=eui64, location=location)
