"""Plumbing every Baton service shares: settings, Kafka, PostgreSQL, inbox/outbox, dead letters, logging."""
