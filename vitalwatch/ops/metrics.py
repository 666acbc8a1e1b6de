"""Prometheus metrics of the delivery path, in the default registry (exposure is another module's job).

Names follow Prometheus conventions: ``vitalwatch_`` prefix, base units, ``_total`` for
counters (added by prometheus_client), bounded labels (bed ids come from the configuration).
Metrics are for engineers' graphs, never an alert path: the local alarm command and the
station's heartbeat supervision are.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ALERTS_DELIVERED",
    "BROKER_UNREACHABLE",
    "BROKER_UNREACHABLE_ALARMS",
    "COMMANDS",
    "NON_FINITE_VALUES",
    "OUTBOX_OLDEST_AGE",
    "OUTBOX_PENDING",
    "PERSISTENCE_DEGRADED",
    "PERSISTENCE_FAILURES",
    "PUBLISH_ACK_LATENCY",
]

BROKER_UNREACHABLE = Gauge(
    "vitalwatch_broker_unreachable",
    "1 while alerts of the bed could not be delivered for longer than mqtt.unreachable_alarm_s",
    ["bed"],
)
BROKER_UNREACHABLE_ALARMS = Counter(
    "vitalwatch_broker_unreachable_alarms",
    "Times the broker-unreachable technical alarm was raised",
    ["bed"],
)
OUTBOX_PENDING = Gauge(
    "vitalwatch_outbox_pending",
    "Alert transitions not yet acknowledged by the broker",
    ["bed"],
)
OUTBOX_OLDEST_AGE = Gauge(
    "vitalwatch_outbox_oldest_age_seconds",
    "Age of the oldest alert transition waiting for the broker (0 when none)",
    ["bed"],
)
ALERTS_DELIVERED = Counter(
    "vitalwatch_alerts_delivered",
    "Alert transitions acknowledged by the broker (PUBACK)",
    ["bed"],
)
PERSISTENCE_DEGRADED = Gauge(
    "vitalwatch_persistence_degraded",
    "1 while the outbox/session database cannot be written (alerts go out from memory only)",
)
PERSISTENCE_FAILURES = Counter(
    "vitalwatch_persistence_failures",
    "SQLite writes of the outbox/session database that failed",
)
COMMANDS = Counter(
    "vitalwatch_commands",
    "Nurse commands received, by result (ok or the error code)",
    ["bed", "result"],
)
NON_FINITE_VALUES = Counter(
    "vitalwatch_non_finite_values",
    "NaN/Infinity numbers replaced by null before a JSON document left the daemon, by document kind",
    ["what"],
)
PUBLISH_ACK_LATENCY = Histogram(
    "vitalwatch_publish_ack_latency_seconds",
    "Time from offering an alert transition to the broker to its PUBACK",
    ["bed"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
