-- Each payment event (the provider's id) is passed on once, whatever the number of times it is sent.
CREATE TABLE payment_events (
    payment_event_id text PRIMARY KEY,
    order_id uuid NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
