"""Webhook signing secrets, sealed: how `baton webhooks add` sends one and notification keeps it.

A signing secret must never sit in clear on `notification.subscriptions.v1` (kept 7 days, read by
whoever may read the topic), on a command line or in a database column. The operator's CLI
generates it, shows it once, and sends it sealed with ``BATON_WEBHOOK_SECRETS_KEY``; notification,
the only other holder of that key, keeps it sealed and opens it only to sign a delivery.

Sealing is Fernet (from ``cryptography``): AES-128-CBC with an HMAC-SHA256 over the whole token,
so a token that was tampered with, or sealed with another key, does not open. The setting holds
one key or several, comma-separated, to change the key: the first seals, every one opens, and
notification re-seals what it stores under the first at start-up.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import Field, SecretStr

from libs.platform import stack
from libs.platform.settings import BatonSettings

KEY_SETTING = "BATON_WEBHOOK_SECRETS_KEY"
NEW_SECRET_BYTES = 32
LOCAL_KEY_FILE = "webhook-secrets.key"


class SecretBox:
    """Seals and opens with the keys of ``BATON_WEBHOOK_SECRETS_KEY``."""

    def __init__(self, keys: str) -> None:
        """Raises ValueError, naming the setting but never showing the value, for anything but
        comma-separated Fernet keys (32 url-safe base64 bytes each)."""
        try:
            fernets = [Fernet(k.strip()) for k in keys.split(",") if k.strip()]
            self._first, self._fernet = fernets[0], MultiFernet(fernets)
        except (ValueError, TypeError, IndexError):
            raise ValueError(
                f"{KEY_SETTING} must be one or more comma-separated Fernet keys "
                "(`baton webhooks new-key` makes one)"
            ) from None

    @classmethod
    def of(cls, keys: SecretStr) -> SecretBox:
        return cls(keys.get_secret_value())

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str | None:
        """The secret, or None when it was sealed with none of these keys or was changed since."""
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except (InvalidToken, UnicodeDecodeError):
            return None

    def reseal(self, sealed: str) -> str | None:
        """The secret sealed with the first key: ``sealed`` itself when it is already, None when it
        does not open with any key."""
        try:
            self._first.decrypt(sealed.encode())
            return sealed
        except InvalidToken:
            pass
        try:
            return self._fernet.rotate(sealed.encode()).decode()
        except InvalidToken:
            return None


def new_key() -> str:
    """A fresh key for ``BATON_WEBHOOK_SECRETS_KEY``."""
    return Fernet.generate_key().decode()


def new_webhook_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(NEW_SECRET_BYTES)).decode()


def local_key(create: bool) -> str | None:
    """The key of the local fleet (`make run`, `baton up`, `baton demo`), in the cache folder, mode
    0600; made on first use when ``create``. None when there is none."""
    path = stack.cache_dir() / LOCAL_KEY_FILE
    if not path.exists():
        if not create:
            return None
        _write_private(path, new_key())
    return path.read_text().strip() or None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")


class WebhookOperatorSettings(BatonSettings):
    """What `baton webhooks add` and `rotate-secret` need beyond the platform's settings."""

    webhook_secrets_key: SecretStr | None = Field(
        default=None,
        description="The key notification was given (one or more Fernet keys, the first seals): "
        "secrets are sent sealed with it. Locally, the fleet's key in the cache folder is used.",
    )

    def secret_box(self) -> SecretBox | None:
        if self.webhook_secrets_key is not None:
            return SecretBox.of(self.webhook_secrets_key)
        key = local_key(create=False)
        return SecretBox(key) if key else None
