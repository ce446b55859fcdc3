-- The outbox is a queue: every row is inserted, read once and deleted. Vacuum it after a few hundred
-- dead rows rather than a share of the table, without cost-based sleeps, so the relay's index scan
-- never wades through a long tail of dead entries.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.2
);
