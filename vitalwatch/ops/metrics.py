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
    "PCD04_ACK_LATENCY",
    "PCD04_DELIVERED",
    "PCD04_DISCONNECTS",
    "PCD04_NAKS",
    "PCD04_OLDEST_AGE",
    "PCD04_PENDING",
    "PCD04_UNREACHABLE",
    "PCD04_UNREACHABLE_ALARMS",
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

# IHE PCD-04 alert reporters (one label value per configured [[alert_reporters]] id).
PCD04_PENDING = Gauge(
    "vitalwatch_pcd04_pending",
    "Alert reports not yet accepted (AA) by the alarm manager",
    ["reporter"],
)
PCD04_OLDEST_AGE = Gauge(
    "vitalwatch_pcd04_oldest_age_seconds",
    "Age of the oldest alert report waiting for the alarm manager (0 when none)",
    ["reporter"],
)
PCD04_DELIVERED = Counter(
    "vitalwatch_pcd04_delivered",
    "Alert reports accepted by the alarm manager (ACK with AA or CA)",
    ["reporter"],
)
PCD04_NAKS = Counter(
    "vitalwatch_pcd04_naks",
    "Alert reports the alarm manager refused (MSA-1 AE, AR, CE or CR); each is sent again",
    ["reporter", "code"],
)
PCD04_DISCONNECTS = Counter(
    "vitalwatch_pcd04_disconnects",
    "Connections to the alarm manager that failed or were dropped, by reason",
    ["reporter", "reason"],
)
PCD04_ACK_LATENCY = Histogram(
    "vitalwatch_pcd04_ack_latency_seconds",
    "Time from writing an alert report to the alarm manager's ACK",
    ["reporter"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
PCD04_UNREACHABLE = Gauge(
    "vitalwatch_pcd04_unreachable",
    "1 while alert reports could not be delivered for longer than alert_reporters.unreachable_alarm_s",
    ["reporter"],
)
PCD04_UNREACHABLE_ALARMS = Counter(
    "vitalwatch_pcd04_unreachable_alarms",
    "Times the alarm-manager-unreachable technical alarm was raised",
    ["reporter"],
)
