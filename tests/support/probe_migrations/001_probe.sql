-- No unique key on purpose: a message applied twice would show as two rows.
CREATE TABLE applied (message_id text NOT NULL, body text NOT NULL, applied_at timestamptz DEFAULT now());
