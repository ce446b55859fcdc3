-- Fulfillment keeps an order's destination to one decimal of a degree (about 11 km): enough for
-- transit days, never a home's position (services/fulfillment/domain/shipments.py, `coarse`).
UPDATE orders SET lat = round(lat::numeric, 1)::double precision, lon = round(lon::numeric, 1)::double precision
WHERE lat IS NOT NULL OR lon IS NOT NULL;
