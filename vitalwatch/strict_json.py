"""JSON text that every strict parser can read: no ``NaN``, ``Infinity`` or ``-Infinity``, ever.

Why: Python's ``json.dumps`` writes a non-finite float as ``Infinity``, which is not JSON. A
station's ``JSON.parse`` throws on it, so one ``"value":Infinity`` made a nurse station drop a HIGH
alarm. Every JSON document the daemon writes for someone else (MQTT payloads, the outbox journal,
the station server, status socket, logs, exports, CLI output) goes through :func:`dumps`.

A non-finite number is refused, not the document: it is replaced by ``null`` (the contract's "no
value"), the fields are named in one ``json.non_finite`` error log line (field paths only, never
values or patient data) and counted in ``vitalwatch_non_finite_values_total{what=...}``. Refusing
the whole document would lose an alert, which is worse than an alert without its number.
"""

from __future__ import annotations

import json
import math
from typing import Any

import structlog

from vitalwatch.ops.metrics import NON_FINITE_VALUES

__all__ = ["dumps", "finite_copy"]

log = structlog.get_logger("vitalwatch.strict_json")


def finite_copy(obj: Any, path: str = "$") -> tuple[Any, list[str]]:
    """``obj`` with every non-finite float replaced by None, and the paths that were replaced.

    Only dicts, lists and tuples are walked (what ``json.dumps`` serialises); other values are
    returned as they are.
    """
    if isinstance(obj, float):
        return (obj, []) if math.isfinite(obj) else (None, [path])
    if isinstance(obj, dict):
        out: dict[Any, Any] = {}
        found: list[str] = []
        for key, value in obj.items():
            out[key], sub = finite_copy(value, f"{path}.{key}")
            found += sub
        return out, found
    if isinstance(obj, list | tuple):
        items: list[Any] = []
        found = []
        for index, value in enumerate(obj):
            item, sub = finite_copy(value, f"{path}[{index}]")
            items.append(item)
            found += sub
        return items, found
    return obj, []


def dumps(obj: Any, *, what: str, **kwargs: Any) -> str:
    """``json.dumps(obj, allow_nan=False, **kwargs)``; non-finite numbers become null (logged, counted).

    ``what`` names the kind of document for the log line and the metric label (a small fixed set:
    ``alert``, ``status``, ``vital``, ``outbox``, ``export`` ...).
    """
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:
        cleaned, paths = finite_copy(obj)
        if not paths:
            raise  # not about non-finite numbers (a circular reference): a bug to see
    NON_FINITE_VALUES.labels(what).inc(len(paths))
    log.error("json.non_finite", what=what, fields=paths[:20], count=len(paths))
    return json.dumps(cleaned, allow_nan=False, **kwargs)
