-- A parcel of the order failed and its lines are not in a shipment yet: the order is not shipped.
ALTER TABLE orders ADD COLUMN awaiting_resource boolean NOT NULL DEFAULT false;
