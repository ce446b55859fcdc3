-- Webhook signing secrets are kept sealed (Fernet, BATON_WEBHOOK_SECRETS_KEY), never in clear.
-- Secrets stored in clear by earlier releases are sealed into secret_sealed, and the clear column
-- blanked, by notification at start-up (the key is notification's, not the migrator's); the
-- column `secret` goes in a later release. A subscription whose secret is not sealed yet gets no
-- delivery from this release.
ALTER TABLE subscriptions
    ALTER COLUMN secret DROP NOT NULL,
    ADD COLUMN secret_sealed text,
    ADD COLUMN previous_secret_sealed text,
    ADD COLUMN previous_secret_until timestamptz;
COMMENT ON COLUMN subscriptions.secret IS 'Clear secrets of earlier releases only: sealed and blanked by notification at start-up';
COMMENT ON COLUMN subscriptions.previous_secret_sealed IS
    'The secret replaced by `baton webhooks rotate-secret`: deliveries are signed with it too until previous_secret_until';
