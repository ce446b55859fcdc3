CREATE TABLE locations (
    location_id text PRIMARY KEY,
    name text NOT NULL,
    kind text NOT NULL,
    lat double precision,
    lon double precision,
    countries text[] NOT NULL,
    cost_per_shipment numeric(18, 4) NOT NULL,
    active boolean NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Stock per (sku, location). The CHECK is the last line against overselling.
CREATE TABLE stock (
    sku text NOT NULL,
    location_id text NOT NULL,
    on_hand integer NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    reserved integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    shipped integer NOT NULL DEFAULT 0,
    written_off integer NOT NULL DEFAULT 0,
    PRIMARY KEY (sku, location_id),
    CHECK (reserved <= on_hand)
);

-- Each adjustment applies exactly once; `delta` is what it changed, also for stock counts.
CREATE TABLE adjustments (
    adjustment_id text PRIMARY KEY,
    sku text NOT NULL,
    location_id text NOT NULL,
    delta integer NOT NULL,
    on_hand_after integer NOT NULL,
    reason text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE allocations (
    order_id uuid PRIMARY KEY,
    status text NOT NULL,
    order_details jsonb NOT NULL,
    skus text[] NOT NULL,
    generation integer NOT NULL DEFAULT 0,
    backordered_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX allocations_waiting ON allocations USING gin (skus) WHERE status = 'backordered';

CREATE TABLE reservations (
    shipment_id text NOT NULL,
    order_id uuid NOT NULL,
    location_id text NOT NULL,
    sku text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    status text NOT NULL DEFAULT 'reserved',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shipment_id, sku)
);
CREATE INDEX reservations_by_order ON reservations (order_id);
