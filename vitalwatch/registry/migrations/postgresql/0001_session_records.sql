-- One row per session record, whatever clinic it came from; the record id is the key, so a
-- record offered twice (a re-offer, a duplicate from a bridge) is stored once.
CREATE TABLE session_records (
    record_id    TEXT PRIMARY KEY,
    site         TEXT NOT NULL,
    bed          TEXT NOT NULL,
    month        TEXT NOT NULL CHECK (month ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    received_utc TIMESTAMPTZ NOT NULL,
    record       JSONB NOT NULL          -- the export row (vitalwatch-session-record/1)
);
CREATE INDEX session_records_site_month ON session_records (site, month);
