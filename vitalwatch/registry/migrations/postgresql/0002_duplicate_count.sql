-- How often a stored record was offered again: a gateway re-offers until its receipt arrives,
-- so a clinic with many repeats has receipts that do not come back (docs/registry.md).
ALTER TABLE session_records ADD COLUMN offers_repeated INTEGER NOT NULL DEFAULT 0;
