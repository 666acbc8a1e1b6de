-- The registry page's figures (docs/registry.md, "The registry page"), kept beside each record so
-- that its aggregate queries read narrow covering indexes instead of every record's JSON. The
-- registry fills them as it stores a record (vitalwatch/registry/figures.py, page_values); this
-- fills them for the records stored before, by the same rule: a value that is not a JSON number
-- is NULL (unknown, never a guess), and an alarm count is kept only when it is a whole number of
-- 1..1,000,000 under a condition object.
ALTER TABLE session_records
    ADD COLUMN dose_mg_per_kg double precision,
    ADD COLUMN max_systolic double precision,
    ADD COLUMN max_diastolic double precision,
    ADD COLUMN min_spo2 double precision,
    ADD COLUMN min_pulse double precision,
    ADD COLUMN discharge_ready_min double precision;
UPDATE session_records SET
    dose_mg_per_kg = CASE WHEN jsonb_typeof(record -> 'dose_mg_per_kg') = 'number' THEN (record ->> 'dose_mg_per_kg')::double precision END,
    max_systolic = CASE WHEN jsonb_typeof(record -> 'max_systolic') = 'number' THEN (record ->> 'max_systolic')::double precision END,
    max_diastolic = CASE WHEN jsonb_typeof(record -> 'max_diastolic') = 'number' THEN (record ->> 'max_diastolic')::double precision END,
    min_spo2 = CASE WHEN jsonb_typeof(record -> 'min_spo2') = 'number' THEN (record ->> 'min_spo2')::double precision END,
    min_pulse = CASE WHEN jsonb_typeof(record -> 'min_pulse') = 'number' THEN (record ->> 'min_pulse')::double precision END,
    discharge_ready_min = CASE WHEN jsonb_typeof(record -> 'discharge_ready_after_recovery_min') = 'number' THEN (record ->> 'discharge_ready_after_recovery_min')::double precision END;

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

-- The CASEs keep jsonb_each from ever seeing a non-object, whatever order the planner chooses.
INSERT INTO session_alarm_counts (record_id, site, month, condition, priority, occurrences)
SELECT record_id, site, month, condition, priority, n::integer FROM (
    SELECT r.record_id, r.site, r.month, c.key AS condition, p.key AS priority,
           CASE WHEN jsonb_typeof(p.value) = 'number' THEN (p.value)::numeric END AS n
    FROM session_records r
    CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(r.record -> 'alarms') = 'object'
                                       THEN r.record -> 'alarms' ELSE '{}'::jsonb END) c
    CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(c.value) = 'object'
                                       THEN c.value ELSE '{}'::jsonb END) p
) counted
WHERE n BETWEEN 1 AND 1000000 AND n = trunc(n);
