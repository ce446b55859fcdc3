-- Each edit request is acted on once, whatever the number of times it is sent.
CREATE TABLE edit_requests (
    request_id text PRIMARY KEY,
    order_id uuid NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
