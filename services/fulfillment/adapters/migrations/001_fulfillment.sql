CREATE TABLE locations (
    location_id text PRIMARY KEY,
    kind text NOT NULL,
    lat double precision,
    lon double precision
);

CREATE TABLE orders (
    order_id uuid PRIMARY KEY,
    channel text NOT NULL,
    shipping_method text NOT NULL,
    lat double precision,
    lon double precision,
    progress text
);

CREATE TABLE shipments (
    shipment_id text PRIMARY KEY,
    order_id uuid NOT NULL REFERENCES orders (order_id),
    location_id text NOT NULL,
    pipeline text NOT NULL,
    stage text NOT NULL,
    active boolean NOT NULL DEFAULT true,
    lines jsonb NOT NULL,
    carrier text,
    tracking_number text,
    stage_entered_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shipments_by_order ON shipments (order_id);

CREATE TABLE applied_updates (
    update_id text PRIMARY KEY,
    shipment_id text NOT NULL,
    outcome text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
