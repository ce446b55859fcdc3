-- The fulfillment board. Keys get a role: `viewer` reads, `operator` also acts; keys made before
-- roles existed could only read, so they are viewers.
ALTER TABLE api_keys ADD COLUMN role text NOT NULL DEFAULT 'viewer' CHECK (role IN ('viewer', 'operator'));

-- Every action taken on the board, with the key that took it; written in the transaction that puts
-- the command it published in the outbox (an action is recorded exactly when its command goes out).
CREATE TABLE operator_actions (
    action_id uuid PRIMARY KEY,
    key_id text NOT NULL,
    key_name text NOT NULL,
    action text NOT NULL,                            -- move, release, reject, cancel, redeliver
    order_id uuid,
    subject text NOT NULL,                           -- the shipment, order or delivery acted on
    detail jsonb NOT NULL,                           -- the command as published
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operator_actions_by_order ON operator_actions (order_id, at);
