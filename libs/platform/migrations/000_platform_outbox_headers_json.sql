-- Headers are written once and read back whole by the relay: keep them as text that is checked to
-- be JSON (json), not converted to and from a binary form (jsonb) for every event.
ALTER TABLE outbox ALTER COLUMN headers TYPE json USING headers::json;
