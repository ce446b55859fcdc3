CREATE TABLE subscriptions (
    subscription_id text PRIMARY KEY,
    url text NOT NULL,
    secret text NOT NULL,
    events text[] NOT NULL,
    active boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One delivery per (subscription, event): its id is the Standard Webhooks `webhook-id`.
CREATE TABLE deliveries (
    delivery_id text PRIMARY KEY,
    subscription_id text NOT NULL,
    event_key text NOT NULL,
    body bytea NOT NULL,
    status text NOT NULL DEFAULT 'pending',          -- pending, delivered, dead
    attempts integer NOT NULL DEFAULT 0,             -- all attempts ever
    round_attempts integer NOT NULL DEFAULT 0,       -- attempts since the last (re)delivery request
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE delivery_attempts (
    id bigserial PRIMARY KEY,
    delivery_id text NOT NULL,
    attempt integer NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    status_code integer,
    error text,
    duration_ms integer NOT NULL
);
CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id);

CREATE TABLE customers (
    order_id uuid PRIMARY KEY,
    email text NOT NULL,
    name text NOT NULL,
    external_id text NOT NULL
);

-- One e-mail per order and status.
CREATE TABLE emails (
    order_id uuid NOT NULL,
    status text NOT NULL,
    context jsonb NOT NULL,
    state text NOT NULL DEFAULT 'pending',           -- pending, sent
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    sent_at timestamptz,
    PRIMARY KEY (order_id, status)
);

-- The read model behind the status API, built only from public events.
CREATE TABLE order_views (
    order_id uuid PRIMARY KEY,
    channel text NOT NULL,
    external_id text NOT NULL,
    status text NOT NULL,
    version integer NOT NULL,
    eta timestamptz,
    shipments jsonb NOT NULL DEFAULT '[]',
    updated_at timestamptz NOT NULL
);
CREATE INDEX order_views_by_channel ON order_views (channel, external_id);

CREATE TABLE order_timeline (
    order_id uuid NOT NULL,
    seq bigserial,
    kind text NOT NULL,
    event jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (order_id, seq)
);

CREATE TABLE shipment_stages (
    shipment_id text PRIMARY KEY,
    order_id uuid NOT NULL,
    pipeline text NOT NULL,
    stage text,
    updated_at timestamptz NOT NULL
);
