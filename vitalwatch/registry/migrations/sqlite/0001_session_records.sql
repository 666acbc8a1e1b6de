-- One row per session record, whatever clinic it came from; the record id is the key, so a
-- record offered twice (a re-offer, a duplicate from a bridge) is stored once.
CREATE TABLE session_records (
    record_id    TEXT PRIMARY KEY,
    site         TEXT NOT NULL,
    bed          TEXT NOT NULL,
    month        TEXT NOT NULL,          -- YYYY-MM (UTC) the session started
    received_utc TEXT NOT NULL,          -- ISO 8601, when the registry stored it
    record       TEXT NOT NULL           -- the export row, JSON (vitalwatch-session-record/1)
);
CREATE INDEX session_records_site_month ON session_records (site, month);
