-- One row per alert transition (alert_id, seq) of a bed, whatever clinic it came from: a gateway
-- with alert receipts re-offers a transition until it is receipted, and a bridge may repeat one,
-- so the key makes each one stored once; the first copy is kept, repeats are counted.
CREATE TABLE alerts (
    site            TEXT NOT NULL,
    bed             TEXT NOT NULL,
    alert_id        TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    received_utc    TIMESTAMPTZ NOT NULL,  -- when the registry stored it
    payload         JSONB NOT NULL,        -- the alert transition (vitalwatch.alert/1)
    offers_repeated INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (site, bed, alert_id, seq)
);
