-- What the customer paid for each order (kept from its first allocation): refunds are priced from it.
CREATE TABLE order_terms (
    order_id uuid PRIMARY KEY,
    currency text NOT NULL,
    payment_reference text NOT NULL,
    prices jsonb NOT NULL,             -- {sku: unit price as a decimal string}
    shipping_price numeric
);

-- Returns (RMA): decided once per return id, received once. The customer's reason is not kept.
CREATE TABLE returns (
    return_id text PRIMARY KEY,
    order_id uuid NOT NULL,
    state text NOT NULL,               -- authorized, refused, received
    lines jsonb NOT NULL,              -- {sku: units asked for}
    refusal_code text,
    refusal_message text,
    location_id text,
    received jsonb NOT NULL DEFAULT '[]',  -- [[sku, units, condition], ...]
    decided_at timestamptz NOT NULL DEFAULT now(),
    received_at timestamptz
);
CREATE INDEX returns_by_order ON returns (order_id);
