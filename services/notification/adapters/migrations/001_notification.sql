-- Status events notification has seen; webhooks and customer messages arrive with lifecycle part 2.
CREATE TABLE statuses_seen (
    order_id uuid NOT NULL,
    version integer NOT NULL,
    status text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, version)
);
