"""The registry page's figures: SQL aggregates per clinic and month, the same on SQLite and PostgreSQL.

Per (site, month), or per month for all clinics together: sessions; the dose range (mg/kg);
the share of sessions with blood pressure at or above 180/110 mmHg, with SpO2 below 90 %, with
a pulse rate below 50 /min; the median time from pump stop to discharge-ready; and alarm
occurrences per session by condition and priority. Each share counts only the sessions that
had the measurement (a session without an NIBP reading is neither high nor normal), and says
how many that were.

The thresholds are the session record's registry thresholds (docs/session-record.md, "time
beyond thresholds"), judged on the record's peaks from the infusion start: ``max_systolic`` /
``max_diastolic``, ``min_spo2``, ``min_pulse``. The queries read the columns and the alarm
table the registry derives from every record as it stores it (:mod:`vitalwatch.registry.derived`,
migration 4), through covering indexes; the median is each group's middle value read in order
from an index (LIMIT/OFFSET), which both engines do alike, so there is one SQL text per figure.
The queries of a page run in one read snapshot, so a page never mixes two states of a database
being written to.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vitalwatch.registry.database import RegistryDb

__all__ = [
    "ALL_SITES",
    "QUERIES",
    "THRESHOLDS",
    "MonthFigures",
    "Scope",
    "figures",
    "sites",
]

ALL_SITES = "all"
# (systolic, diastolic) mmHg at or above; SpO2 % below; pulse rate /min below.
THRESHOLDS = {"systolic": 180.0, "diastolic": 110.0, "spo2": 90.0, "pulse": 50.0}
_MONTH = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Scope:
    """Which figures: one clinic (``site``), every clinic per month (``by_site``), or the region
    as a whole per month (neither); optionally only ``since``..``until`` (YYYY-MM, inclusive)."""

    site: str | None = None
    by_site: bool = False
    since: str | None = None
    until: str | None = None

    def __post_init__(self) -> None:
        if self.site is not None and not _SITE.match(self.site):
            raise ValueError("site must be a site id (letters, digits, '.', '_', '-')")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and not _MONTH.match(value):
                raise ValueError(f"{name} must be YYYY-MM")

    @property
    def per_site(self) -> bool:
        return self.site is not None or self.by_site

    def group(self) -> str:
        return "site, month" if self.per_site else "month"

    def where(self) -> tuple[str, list[Any]]:
        """A WHERE clause (with its leading keyword, or empty) and its parameters."""
        terms: list[str] = []
        params: list[Any] = []
        for term, value in (
            ("site = %s", self.site),
            ("month >= %s", self.since),
            ("month <= %s", self.until),
        ):
            if value is not None:
                terms.append(term)
                params.append(value)
        return (" WHERE " + " AND ".join(terms) if terms else ""), params


@dataclass(slots=True)
class MonthFigures:
    """One row of the page: a clinic (or ``all``) in one month."""

    site: str
    month: str
    sessions: int
    dose_min: float | None = None
    dose_max: float | None = None
    dose_known: int = 0
    bp_high: int = 0
    bp_known: int = 0
    desaturation: int = 0
    spo2_known: int = 0
    bradycardia: int = 0
    pulse_known: int = 0
    discharge_median_min: float | None = None
    discharge_known: int = 0
    # condition -> priority -> occurrences (the highest priority each occurrence reached)
    alarms: dict[str, dict[str, int]] = field(default_factory=dict)

    @staticmethod
    def share(part: int, known: int) -> float | None:
        return None if known == 0 else part / known

    @property
    def alarm_occurrences(self) -> int:
        return sum(n for by_priority in self.alarms.values() for n in by_priority.values())

    def alarms_per_session(self) -> dict[str, dict[str, float]]:
        return {
            c: {p: n / self.sessions for p, n in by_priority.items()}
            for c, by_priority in self.alarms.items()
        }

    def as_json(self) -> dict[str, Any]:
        """The row as the JSON endpoint serves it (shares as fractions, rounded for reading)."""

        def r(x: float | None, digits: int = 4) -> float | None:
            return None if x is None else round(x, digits)

        return {
            "site": self.site,
            "month": self.month,
            "sessions": self.sessions,
            "dose_mg_per_kg": {"min": self.dose_min, "max": self.dose_max, "known": self.dose_known},
            "bp_180_110": {"sessions": self.bp_high, "known": self.bp_known,
                           "share": r(self.share(self.bp_high, self.bp_known))},
            "spo2_below_90": {"sessions": self.desaturation, "known": self.spo2_known,
                              "share": r(self.share(self.desaturation, self.spo2_known))},
            "pulse_below_50": {"sessions": self.bradycardia, "known": self.pulse_known,
                               "share": r(self.share(self.bradycardia, self.pulse_known))},
            "discharge_ready_median_min": r(self.discharge_median_min, 1),
            "discharge_ready_known": self.discharge_known,
            "alarms_per_session": r(self.alarm_occurrences / self.sessions, 3),
            "alarms": {
                c: {
                    p: {"occurrences": n, "per_session": r(n / self.sessions, 3)}
                    for p, n in sorted(by.items())
                }
                for c, by in sorted(self.alarms.items())
            },
        }  # fmt: skip


def _counts(db: RegistryDb, scope: Scope) -> list[tuple[Any, ...]]:
    """Per site and month from the covering index; for the region, those rows summed per month
    (counts, minima and maxima combine; SQLite would otherwise read the table)."""
    where, params = scope.where()
    sql = (
        "SELECT site, month, COUNT(*) AS n, MIN(dose_mg_per_kg) AS dmin, MAX(dose_mg_per_kg) AS dmax,"
        " COUNT(dose_mg_per_kg) AS dn,"
        " SUM(CASE WHEN max_systolic >= %s OR max_diastolic >= %s THEN 1 ELSE 0 END) AS bp,"
        " SUM(CASE WHEN max_systolic IS NOT NULL OR max_diastolic IS NOT NULL THEN 1 ELSE 0 END) AS bpn,"
        " SUM(CASE WHEN min_spo2 < %s THEN 1 ELSE 0 END) AS sp, COUNT(min_spo2) AS spn,"
        " SUM(CASE WHEN min_pulse < %s THEN 1 ELSE 0 END) AS pu, COUNT(min_pulse) AS pun"
        f" FROM session_records{where} GROUP BY site, month"
    )
    if scope.per_site:
        sql += " ORDER BY site, month"
    else:
        sql = (
            "SELECT month, SUM(n), MIN(dmin), MAX(dmax), SUM(dn), SUM(bp), SUM(bpn), SUM(sp), SUM(spn),"
            f" SUM(pu), SUM(pun) FROM ({sql}) per_site GROUP BY month ORDER BY month"
        )
    t = THRESHOLDS
    return db.query(sql, [t["systolic"], t["diastolic"], t["spo2"], t["pulse"], *params])


def _discharge_medians(db: RegistryDb, scope: Scope) -> list[tuple[Any, ...]]:
    """(group..., median, n) per group: how many discharge times each group has, then its middle
    one or two read in order from an index on (site, month, time), or (month, time) for the
    region, with LIMIT and OFFSET. A window function over every row would have to sort a region's
    year (seconds at 1.8 million rows); this walks half of each group's index entries."""
    where, params = scope.where()
    known = (where + " AND" if where else " WHERE") + " discharge_ready_min IS NOT NULL"
    g = scope.group()
    sizes = db.query(f"SELECT {g}, COUNT(*) FROM session_records{known} GROUP BY {g} ORDER BY {g}", params)
    match = "site = %s AND month = %s" if scope.per_site else "month = %s"
    middle = (
        f"SELECT discharge_ready_min FROM session_records WHERE {match} AND discharge_ready_min IS NOT NULL"
        " ORDER BY discharge_ready_min LIMIT %s OFFSET %s"
    )
    out: list[tuple[Any, ...]] = []
    for *group, n in sizes:
        values = [float(r[0]) for r in db.query(middle, [*group, 2 - n % 2, (n - 1) // 2])]
        out.append((*group, sum(values) / len(values), n))
    return out


def _alarms(db: RegistryDb, scope: Scope) -> list[tuple[Any, ...]]:
    where, params = scope.where()
    g = scope.group()
    sql = (
        f"SELECT {g}, condition, priority, SUM(occurrences) FROM session_alarm_counts{where}"
        f" GROUP BY {g}, condition, priority ORDER BY {g}, condition, priority"
    )
    return db.query(sql, params)


# The page's aggregates by name (the benchmark times each); each runs in figures()' snapshot.
QUERIES: dict[str, Callable[[RegistryDb, Scope], list[tuple[Any, ...]]]] = {
    "counts": _counts,
    "discharge_median": _discharge_medians,
    "alarms": _alarms,
}


def _key(scope: Scope, row: Sequence[Any]) -> tuple[tuple[str, str], Sequence[Any]]:
    """((site, month), the rest of the row)."""
    if scope.per_site:
        return (str(row[0]), str(row[1])), row[2:]
    return (ALL_SITES, str(row[0])), row[1:]


def _float(x: Any) -> float | None:
    return None if x is None else float(x)


def figures(db: RegistryDb, scope: Scope) -> list[MonthFigures]:
    """The page's rows for ``scope``, by site and month."""
    with db.snapshot():
        counts = _counts(db, scope)
        discharge = _discharge_medians(db, scope)
        alarms = _alarms(db, scope)
    rows: dict[tuple[str, str], MonthFigures] = {}
    for raw in counts:
        (site, month), r = _key(scope, raw)
        rows[(site, month)] = MonthFigures(
            site, month, int(r[0]), _float(r[1]), _float(r[2]), int(r[3]),
            int(r[4]), int(r[5]), int(r[6]), int(r[7]), int(r[8]), int(r[9]),
        )  # fmt: skip
    for raw in discharge:
        key, r = _key(scope, raw)
        rows[key].discharge_median_min = _float(r[0])
        rows[key].discharge_known = int(r[1])
    for raw in alarms:
        key, r = _key(scope, raw)
        rows[key].alarms.setdefault(str(r[0]), {})[str(r[1])] = int(r[2])
    return list(rows.values())


def sites(db: RegistryDb) -> list[str]:
    """Every site with a stored record, in order; one index probe per site, not a scan."""
    rows = db.query(
        "WITH RECURSIVE s(site) AS ("
        " SELECT MIN(site) FROM session_records"
        " UNION ALL SELECT (SELECT MIN(site) FROM session_records WHERE site > s.site) FROM s"
        " WHERE s.site IS NOT NULL)"
        " SELECT site FROM s WHERE site IS NOT NULL"
    )
    return [str(r[0]) for r in rows]
