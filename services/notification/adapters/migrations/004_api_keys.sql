-- Keys of the status API. Only each key's SHA-256 digest is kept: `baton api-keys add` prints the
-- key once and sends only the digest (on notification.api-keys.v1).
CREATE TABLE api_keys (
    key_id text PRIMARY KEY,
    name text NOT NULL DEFAULT '',
    key_hash text NOT NULL UNIQUE,
    channels text[] NOT NULL,                        -- '*' reads every channel
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz                           -- revoked for good
);
