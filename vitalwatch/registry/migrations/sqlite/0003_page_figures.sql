-- The registry page's figures (docs/registry.md, "The registry page"), kept beside each record so
-- that its aggregate queries read a narrow index instead of parsing every record's JSON.
--
-- Scalars: virtual columns computed from the record (a value that is not a JSON number is NULL,
-- i.e. unknown, never a guess), stored only in the covering indexes below, which the page's
-- queries scan. A row stored before this version gets its values when the indexes are built.
ALTER TABLE session_records ADD COLUMN dose_mg_per_kg REAL GENERATED ALWAYS AS (
    CASE WHEN json_type(record, '$.dose_mg_per_kg') IN ('integer', 'real')
         THEN json_extract(record, '$.dose_mg_per_kg') END) VIRTUAL;
ALTER TABLE session_records ADD COLUMN max_systolic REAL GENERATED ALWAYS AS (
    CASE WHEN json_type(record, '$.max_systolic') IN ('integer', 'real')
         THEN json_extract(record, '$.max_systolic') END) VIRTUAL;
ALTER TABLE session_records ADD COLUMN max_diastolic REAL GENERATED ALWAYS AS (
    CASE WHEN json_type(record, '$.max_diastolic') IN ('integer', 'real')
         THEN json_extract(record, '$.max_diastolic') END) VIRTUAL;
ALTER TABLE session_records ADD COLUMN min_spo2 REAL GENERATED ALWAYS AS (
    CASE WHEN json_type(record, '$.min_spo2') IN ('integer', 'real')
         THEN json_extract(record, '$.min_spo2') END) VIRTUAL;
ALTER TABLE session_records ADD COLUMN min_pulse REAL GENERATED ALWAYS AS (
    CASE WHEN json_type(record, '$.min_pulse') IN ('integer', 'real')
         THEN json_extract(record, '$.min_pulse') END) VIRTUAL;
ALTER TABLE session_records ADD COLUMN discharge_ready_min REAL GENERATED ALWAYS AS (
    CASE WHEN json_type(record, '$.discharge_ready_after_recovery_min') IN ('integer', 'real')
         THEN json_extract(record, '$.discharge_ready_after_recovery_min') END) VIRTUAL;

CREATE INDEX session_records_page ON session_records
    (site, month, dose_mg_per_kg, max_systolic, max_diastolic, min_spo2, min_pulse);
-- Ordered per clinic and month, so the median needs no sort for one clinic.
CREATE INDEX session_records_discharge ON session_records (site, month, discharge_ready_min);

-- Alarm occurrences per session by condition and priority: the record's nested "alarms" object
-- ({condition: {priority: count}}) as rows, filled by a trigger as each record is stored (a
-- repeat is not inserted, so it does not fire) and here for the records stored before.
CREATE TABLE session_alarm_counts (
    record_id   TEXT NOT NULL REFERENCES session_records (record_id),
    site        TEXT NOT NULL,
    month       TEXT NOT NULL,
    condition   TEXT NOT NULL,
    priority    TEXT NOT NULL,
    occurrences INTEGER NOT NULL,
    PRIMARY KEY (record_id, condition, priority)
);
CREATE INDEX session_alarm_counts_page ON session_alarm_counts
    (site, month, condition, priority, occurrences);

INSERT INTO session_alarm_counts (record_id, site, month, condition, priority, occurrences)
SELECT r.record_id, r.site, r.month, c.key, p.key, p.value
FROM session_records r, json_each(r.record, '$.alarms') c, json_each(c.value) p
WHERE json_type(r.record, '$.alarms') = 'object' AND c.type = 'object'
  AND p.type = 'integer' AND p.value BETWEEN 1 AND 1000000;

CREATE TRIGGER session_alarm_counts_fill AFTER INSERT ON session_records
WHEN json_type(NEW.record, '$.alarms') = 'object'
BEGIN
    INSERT INTO session_alarm_counts (record_id, site, month, condition, priority, occurrences)
    SELECT NEW.record_id, NEW.site, NEW.month, c.key, p.key, p.value
    FROM json_each(NEW.record, '$.alarms') c, json_each(c.value) p
    WHERE c.type = 'object' AND p.type = 'integer' AND p.value BETWEEN 1 AND 1000000;
END;
