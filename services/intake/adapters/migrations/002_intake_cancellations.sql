-- Each cancel request is acted on once, whatever the number of times it is sent.
CREATE TABLE cancel_requests (
    request_id text PRIMARY KEY,
    order_id uuid,
    received_at timestamptz NOT NULL DEFAULT now()
);
