-- Units per customer, sku and day (UTC, of the order's placed_at) of validated orders: what rules
-- declared with uses_daily_units see (libs/extensions/validation.py). Rows older than two days are
-- pruned by a daily durable timer, scheduled here for the first time.
CREATE TABLE customer_daily_units (
    customer_key text NOT NULL,
    day date NOT NULL,
    sku text NOT NULL,
    units integer NOT NULL,
    PRIMARY KEY (customer_key, day, sku)
);
CREATE INDEX customer_daily_units_day ON customer_daily_units (day);

INSERT INTO timers (kind, key, due_at) VALUES ('prune-daily-units', 'validation', now())
ON CONFLICT DO NOTHING;
