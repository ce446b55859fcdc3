-- An erasure finds a customer's orders without reading every allocation.
CREATE INDEX allocations_by_customer ON allocations ((order_details -> 'customer' ->> 'id'));
