-- Intake writes an order and its timeline in the same transactions; the foreign key only added a
-- lookup of the order per timeline row (four or five per order) and protected nothing else.
ALTER TABLE status_history DROP CONSTRAINT IF EXISTS status_history_order_id_fkey;
