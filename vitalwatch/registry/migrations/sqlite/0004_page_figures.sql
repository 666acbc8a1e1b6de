-- The registry page's figures (docs/registry.md, "The registry page"), kept beside each record so
-- that its aggregate queries read narrow covering indexes instead of every record's JSON. The
-- registry fills them as it stores a record (vitalwatch/registry/figures.py, page_values); this
-- fills them for the records stored before, by the same rule: a value that is not a JSON number
-- is NULL (unknown, never a guess), and an alarm count is kept only when it is a whole number of
-- 1..1,000,000 under a condition object.
ALTER TABLE session_records ADD COLUMN dose_mg_per_kg REAL;
ALTER TABLE session_records ADD COLUMN max_systolic REAL;
ALTER TABLE session_records ADD COLUMN max_diastolic REAL;
ALTER TABLE session_records ADD COLUMN min_spo2 REAL;
ALTER TABLE session_records ADD COLUMN min_pulse REAL;
ALTER TABLE session_records ADD COLUMN discharge_ready_min REAL;
UPDATE session_records SET
    dose_mg_per_kg = CASE WHEN json_type(record, '$.dose_mg_per_kg') IN ('integer', 'real') THEN json_extract(record, '$.dose_mg_per_kg') END,
    max_systolic = CASE WHEN json_type(record, '$.max_systolic') IN ('integer', 'real') THEN json_extract(record, '$.max_systolic') END,
    max_diastolic = CASE WHEN json_type(record, '$.max_diastolic') IN ('integer', 'real') THEN json_extract(record, '$.max_diastolic') END,
    min_spo2 = CASE WHEN json_type(record, '$.min_spo2') IN ('integer', 'real') THEN json_extract(record, '$.min_spo2') END,
    min_pulse = CASE WHEN json_type(record, '$.min_pulse') IN ('integer', 'real') THEN json_extract(record, '$.min_pulse') END,
    discharge_ready_min = CASE WHEN json_type(record, '$.discharge_ready_after_recovery_min') IN ('integer', 'real') THEN json_extract(record, '$.discharge_ready_after_recovery_min') END;

-- Covering indexes for the page's scans. By site and month first (they also serve every lookup
-- by site and month, so version 1's narrower index goes); the discharge times in order within a
-- clinic's month and within a month of the region, so the medians read them sorted.
CREATE INDEX session_records_page ON session_records
    (site, month, dose_mg_per_kg, max_systolic, max_diastolic, min_spo2, min_pulse);
CREATE INDEX session_records_discharge ON session_records (site, month, discharge_ready_min);
CREATE INDEX session_records_month_discharge ON session_records (month, discharge_ready_min);
DROP INDEX session_records_site_month;

-- Alarm occurrences per session by condition and priority: the record's nested "alarms" object
-- ({condition: {priority: count}}) as rows.
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
