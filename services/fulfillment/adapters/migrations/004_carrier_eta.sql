-- The carrier's expected delivery for a shipment: replaces Baton's estimate once given.
ALTER TABLE shipments ADD COLUMN carrier_eta timestamptz;
