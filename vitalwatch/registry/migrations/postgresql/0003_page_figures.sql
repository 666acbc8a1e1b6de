-- The registry page's figures (docs/registry.md, "The registry page"), kept beside each record so
-- that its aggregate queries read a narrow index instead of every record's JSONB.
--
-- Scalars: generated columns computed from the record (a value that is not a JSON number is
-- NULL, i.e. unknown, never a guess). Adding them rewrites the table once, filling the rows
-- stored before this version.
ALTER TABLE session_records
    ADD COLUMN dose_mg_per_kg double precision GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(record -> 'dose_mg_per_kg') = 'number'
             THEN (record ->> 'dose_mg_per_kg')::double precision END) STORED,
    ADD COLUMN max_systolic double precision GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(record -> 'max_systolic') = 'number'
             THEN (record ->> 'max_systolic')::double precision END) STORED,
    ADD COLUMN max_diastolic double precision GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(record -> 'max_diastolic') = 'number'
             THEN (record ->> 'max_diastolic')::double precision END) STORED,
    ADD COLUMN min_spo2 double precision GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(record -> 'min_spo2') = 'number'
             THEN (record ->> 'min_spo2')::double precision END) STORED,
    ADD COLUMN min_pulse double precision GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(record -> 'min_pulse') = 'number'
             THEN (record ->> 'min_pulse')::double precision END) STORED,
    ADD COLUMN discharge_ready_min double precision GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(record -> 'discharge_ready_after_recovery_min') = 'number'
             THEN (record ->> 'discharge_ready_after_recovery_min')::double precision END) STORED;

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

-- (condition, priority, occurrences) of one record; anything but a whole count of 1..1,000,000
-- under an object is left out (the CASEs keep a malformed record from failing its batch).
CREATE FUNCTION session_alarm_rows(record jsonb)
RETURNS TABLE (condition text, priority text, occurrences integer)
LANGUAGE sql IMMUTABLE AS $$
    SELECT c.key, p.key, p.n::integer
    FROM jsonb_each(CASE WHEN jsonb_typeof(record -> 'alarms') = 'object'
                         THEN record -> 'alarms' ELSE '{}'::jsonb END) c
    CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(c.value) = 'object'
                                       THEN c.value ELSE '{}'::jsonb END) p0
    CROSS JOIN LATERAL (SELECT p0.key,
        CASE WHEN jsonb_typeof(p0.value) = 'number' THEN (p0.value)::numeric END AS n) p
    WHERE p.n BETWEEN 1 AND 1000000 AND p.n = trunc(p.n)
$$;

INSERT INTO session_alarm_counts (record_id, site, month, condition, priority, occurrences)
SELECT r.record_id, r.site, r.month, a.condition, a.priority, a.occurrences
FROM session_records r CROSS JOIN LATERAL session_alarm_rows(r.record) a;

CREATE FUNCTION session_alarm_counts_fill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO session_alarm_counts (record_id, site, month, condition, priority, occurrences)
    SELECT NEW.record_id, NEW.site, NEW.month, a.condition, a.priority, a.occurrences
    FROM session_alarm_rows(NEW.record) a;
    RETURN NULL;
END
$$;

CREATE TRIGGER session_alarm_counts_fill AFTER INSERT ON session_records
    FOR EACH ROW EXECUTE FUNCTION session_alarm_counts_fill();
