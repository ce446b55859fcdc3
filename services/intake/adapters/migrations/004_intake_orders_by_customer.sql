-- An erasure finds a customer's orders without reading every order.
CREATE INDEX orders_by_customer ON orders ((details -> 'customer' ->> 'id'));
