-- Backordered orders wait in one queue. Orders backordered in the same transaction share now(), so
-- their place comes from a sequence, assigned in the order the orders came; an order that stays
-- backordered (part of its remainder cancelled) keeps its place.
CREATE SEQUENCE backorder_queue;
ALTER TABLE allocations ADD COLUMN queue_position bigint;
UPDATE allocations a SET queue_position = w.position
FROM (
    SELECT order_id, row_number() OVER (ORDER BY backordered_at, order_id) AS position
    FROM allocations WHERE status = 'backordered'
) w
WHERE a.order_id = w.order_id;
SELECT setval('backorder_queue', coalesce(max(queue_position), 0) + 1, false) FROM allocations;
