"""Kept only for tests/chaos/harness.py, which imports EMAIL_STATUSES from here; the rule lives in
`services/notification/domain/emails.py` (the harness is not notification's to edit)."""

from services.notification.domain.emails import EMAIL_STATUSES

__all__ = ["EMAIL_STATUSES"]
