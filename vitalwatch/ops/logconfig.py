"""structlog set-up: JSON lines for journald, readable lines on a terminal, never patient data.

Configured once at start-up (nothing at import time). Context such as ``bed`` and
``device`` is bound per task with ``structlog.contextvars.bound_contextvars`` so every
line a device task writes carries it. Tracebacks are rendered without local variables:
structlog's default ``dict_tracebacks`` shows locals, which can hold readings or
credentials.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["FORBIDDEN_KEYS", "configure_logging", "redact"]

# Keys that must never reach a log line. Bed and device names are locations, not people.
FORBIDDEN_KEYS = frozenset(
    {
        "patient",
        "patient_id",
        "patient_name",
        "name",
        "mrn",
        "dob",
        "birth_date",
        "pid",
        "password",
        "payload",
    }
)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The single choke point that drops keys which could carry patient data or secrets."""
    for key in FORBIDDEN_KEYS.intersection(event_dict):
        event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog for the process; ``fmt`` is auto (TTY -> console), json or console."""
    out = stream if stream is not None else sys.stdout
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    if console:
        processors.append(structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback))
    else:
        processors += [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
