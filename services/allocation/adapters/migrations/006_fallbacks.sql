-- The last fallback tier a backordered order reached (its search is widened from then on).
CREATE TABLE fallbacks (
    order_id uuid PRIMARY KEY,
    tier int NOT NULL,
    reached_at timestamptz NOT NULL DEFAULT now()
);
