-- Shipments seen by fulfillment; pipelines and stages arrive with the lifecycle part 2 issue.
CREATE TABLE shipments_seen (
    shipment_id text PRIMARY KEY,
    order_id uuid NOT NULL,
    location_id text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
);
