-- E-mail rounds claim the oldest due pending e-mails: an index instead of a scan of every e-mail sent.
CREATE INDEX emails_due ON emails (next_attempt_at) WHERE state = 'pending';
COMMENT ON COLUMN emails.state IS 'pending, sent, or dead after BATON_EMAIL_MAX_ATTEMPTS failed attempts';
