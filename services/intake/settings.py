"""Intake's settings: the platform's (Kafka, PostgreSQL, batching, logging); intake has no rules to tune."""

from __future__ import annotations

from libs.platform.settings import BatonSettings


class IntakeSettings(BatonSettings):
    """Intake's own settings; none yet. Order identity and the status state machine are part of
    the contract with channels and downstream teams, so they are code, not configuration."""
