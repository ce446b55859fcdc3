CREATE TABLE orders (
    order_id uuid PRIMARY KEY,
    channel text NOT NULL,
    external_id text NOT NULL,
    fingerprint text NOT NULL,
    status text NOT NULL,
    version integer NOT NULL,
    details jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel, external_id)
);

-- The timeline of every order: exactly the status events published, one per version.
CREATE TABLE status_history (
    order_id uuid NOT NULL REFERENCES orders (order_id),
    version integer NOT NULL,
    status text NOT NULL,
    event jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (order_id, version)
);
