-- Orders submitted with payment `pending`: their payment state and reservation deadline (the
-- deadline itself is a durable timer); payment events that arrived before the order are kept too.
CREATE TABLE payments (
    order_id uuid PRIMARY KEY,
    state text NOT NULL,
    due_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
