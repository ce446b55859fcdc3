-- Lines still to be sourced (after a failed shipment); NULL means the whole order.
ALTER TABLE allocations ADD COLUMN pending_lines jsonb;
-- Statuses: allocated, backordered, cancelled. Reservation statuses: reserved, shipped, failed, released.
