-- The erasure requests a service applied, each once (libs/platform/erasure_store.py), in every
-- service's schema (fulfillment keeps no personal data and never writes it). The customer is kept
-- only as a digest of the channel's customer id: enough to recognise an order placed before the
-- request that arrives after it, which is then stored erased.
CREATE TABLE erasures (
    request_id text PRIMARY KEY,
    channel text,
    customer_digest text NOT NULL,
    requested_at timestamptz NOT NULL,
    orders integer,
    rows_changed integer,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX erasures_by_customer ON erasures (customer_digest);

-- An erasure and the transactions that store orders exclude each other through one advisory lock
-- per schema (7002, the schema's hash): exclusive while an erasure is applied, shared while orders
-- are checked and stored. Otherwise an order written beside an erasure, by a transaction that read
-- the ledger before the erasure committed, would keep the personal data the erasure removed.
CREATE FUNCTION erasure_claim(request text, only_channel text, digest text, at timestamptz)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7002, hashtext(current_schema()));
    INSERT INTO erasures (request_id, channel, customer_digest, requested_at)
    VALUES (request, only_channel, digest, at) ON CONFLICT DO NOTHING;
    RETURN FOUND;
END $$;

-- One round trip per batch of orders: wait for an erasure under way, then read the ledger afresh
-- (each query of a VOLATILE function sees what committed before it started, the wait included).
CREATE FUNCTION erasures_covering(digests text[]) RETURNS SETOF erasures
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7002, hashtext(current_schema()));
    RETURN QUERY SELECT * FROM erasures WHERE customer_digest = ANY(digests);
END $$;
