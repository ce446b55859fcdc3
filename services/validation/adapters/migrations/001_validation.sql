CREATE TABLE products (
    sku text PRIMARY KEY,
    name text NOT NULL,
    price numeric(18, 4) NOT NULL,
    currency text NOT NULL,
    active boolean NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Orders validated per customer: a customer with none is a first-time customer.
CREATE TABLE customers (
    customer_key text PRIMARY KEY,
    validated_orders integer NOT NULL DEFAULT 0
);

CREATE TABLE held_orders (
    order_id uuid PRIMARY KEY,
    order_details jsonb NOT NULL,
    held_at timestamptz NOT NULL DEFAULT now(),
    decision text,
    decided_by text,
    decided_at timestamptz
);
