-- Whose contact it is, so that an erasure finds it: the channel's customer id (NULL once erased) and
-- when the order was placed. Contacts recorded before this migration have neither (see README,
-- Personal data).
ALTER TABLE customers
    ADD COLUMN channel text,
    ADD COLUMN customer_id text,
    ADD COLUMN placed_at timestamptz,
    ADD COLUMN erased_at timestamptz;
CREATE INDEX customers_by_customer ON customers (customer_id);

COMMENT ON COLUMN emails.state IS
    'pending, sent, dead after BATON_EMAIL_MAX_ATTEMPTS failed attempts, or cancelled (its customer was erased)';
