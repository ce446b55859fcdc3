-- Durable timers (libs/platform/timers.py): one row per pending deadline, written in the same
-- transaction as the state it belongs to and deleted in the transaction that fires it.
CREATE TABLE timers (
    kind       text        NOT NULL,
    key        text        NOT NULL,
    due_at     timestamptz NOT NULL,
    payload    json        NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key)
);
CREATE INDEX timers_due ON timers (due_at);
