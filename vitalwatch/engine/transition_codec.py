"""The one codec of :class:`AlertTransition`: to a plain dict and back.

Every place that writes a transition starts from :func:`transition_to_dict` and every place
that reads one back ends in :func:`transition_from_dict`, so a field added to the dataclass
reaches each of them at once:

.. code-block:: text

    transition_to_dict ─┬─ alert journal (+ UTC epochs)      vitalwatch.continuity.journal_codec
                        ├─ engine snapshot (NaN as text)     vitalwatch.engine.book_state
                        ├─ MQTT alert payload (reshaped)     vitalwatch.delivery.payloads
                        ├─ replay output line (a subset)     vitalwatch.engine.replay
                        └─ session record event (a subset)   vitalwatch.record.sessionlog

The dict holds every field under its dataclass name: enums as their string values, the
evidence tuple as a list, times as the engine's monotonic seconds. ``value`` and ``limit`` go
through ``number`` (the snapshot keeps strict JSON by writing NaN/inf as strings).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Priority

__all__ = ["TIME_FIELDS", "TRANSITION_FIELDS", "transition_from_dict", "transition_to_dict"]

TRANSITION_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(AlertTransition))
"""Every field of a transition, in declaration order (looked up once: this runs on the alarm path)."""

TIME_FIELDS = ("t", "onset_t", "acknowledged_t")
"""The fields that are monotonic times of the process that made the transition."""


def _same(x: float | None) -> Any:
    return x


def transition_to_dict(
    tr: AlertTransition, *, number: Callable[[float | None], Any] = _same
) -> dict[str, Any]:
    """Every field of ``tr`` as plain data (see the module docstring).

    Field by field rather than ``dataclasses.asdict``: asdict deep-copies every value
    recursively, 0.15 ms per alert on the alarm path (docs/performance.md).
    """
    data = {name: getattr(tr, name) for name in TRANSITION_FIELDS}
    data["state"] = tr.state.value
    data["priority"] = tr.priority.value
    data["category"] = tr.category.value
    data["evidence"] = list(tr.evidence)
    data["value"] = number(tr.value)
    data["limit"] = number(tr.limit)
    return data


def transition_from_dict(
    data: Mapping[str, Any], *, times: Mapping[str, float | None] | None = None
) -> AlertTransition:
    """The inverse of :func:`transition_to_dict`; keys that are not fields are ignored.

    ``times`` replaces the :data:`TIME_FIELDS` it names (a reader moving them onto its own
    clock). Raises KeyError or ValueError for a missing field or an unknown enum value.
    """
    values = {name: data[name] for name in TRANSITION_FIELDS if name in data}
    if times:
        values.update(times)
    values["state"] = AlertState(values["state"])
    values["priority"] = Priority(values["priority"])
    values["category"] = Category(values["category"])
    values["evidence"] = tuple(values.get("evidence") or ())
    return AlertTransition(**values)
