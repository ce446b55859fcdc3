"""Notification's settings: the platform's, plus SMTP, webhook delivery and the status API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from libs.platform.secret_box import SecretBox
from libs.platform.settings import BatonSettings
from services.notification.domain.egress import EgressPolicy, IPNetwork, parse_networks


class NotificationSettings(BatonSettings):
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_from: str = "orders@baton.example"
    smtp_starttls: bool = Field(
        default=False, description="Upgrade the plain connection with STARTTLS (the server must offer it)"
    )
    smtp_tls: bool = Field(
        default=False, description="Connect with TLS from the start (SMTPS, usually port 465)"
    )
    smtp_username: str | None = Field(default=None, description="Log in with AUTH when set")
    smtp_password: SecretStr | None = Field(default=None, description="Password for BATON_SMTP_USERNAME")
    smtp_timeout_s: float = Field(default=10.0, gt=0, description="Connect and per-command SMTP timeout")
    smtp_connections: int = Field(
        default=4, ge=1, description="SMTP connections of one e-mail round, each sending its share in turn"
    )
    email_round_size: int = Field(default=200, ge=1, description="Due e-mails claimed per round")
    email_max_attempts: int = Field(
        default=12, ge=1, description="Attempts (render and send) before an e-mail is given up as `dead`"
    )
    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = Field(default=6, ge=1)
    webhook_backoff_base_s: float = 1.0
    webhook_backoff_cap_s: float = 300.0
    webhook_concurrency_per_subscription: int = Field(default=4, ge=1)
    webhook_allow_http: bool = Field(
        default=False,
        description="Allow plain http:// webhooks to public hosts (https only otherwise)",
    )
    webhook_allowed_cidrs: Annotated[tuple[IPNetwork, ...], NoDecode] = Field(
        default=(),
        description="Networks webhooks may reach although they are not public (e.g. "
        "`10.20.0.0/16,127.0.0.1/32`, commas or spaces), over http too; nothing else internal is reached",
    )
    webhook_secrets_key: SecretStr | None = Field(
        default=None,
        description="Seals webhook signing secrets (Fernet keys, comma-separated, the first seals): "
        "the key `baton webhooks add` seals with. Required to run notification.",
    )
    http_host: str = Field(
        default="127.0.0.1",
        description="Address the status API binds: loopback locally, 0.0.0.0 in a container",
    )
    http_port: int = Field(default=8085, description="Status API port; 0 picks a free port")
    api_rate_per_s: float = Field(
        default=20.0,
        gt=0,
        description="Status API requests per second per key (and failed log-ins per address)",
    )
    api_burst: int = Field(default=40, ge=1, description="Status API requests a key may make at once")
    pipelines_file: Path | None = Field(
        default=None,
        description="The pipelines YAML fulfillment runs with (`BATON_PIPELINES_FILE`, the same file): the "
        "board's columns. Unset: the packaged services/fulfillment/pipelines.yaml",
    )

    @field_validator("webhook_allowed_cidrs", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        return parse_networks(value) if isinstance(value, str) else value

    @field_validator("webhook_secrets_key")
    @classmethod
    def _key_opens(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            SecretBox.of(value)  # raises, naming the setting, for anything but Fernet keys
        return value

    def egress_policy(self) -> EgressPolicy:
        """What the egress guard allows beyond public https (the same for sending and `check-url`)."""
        return EgressPolicy(allowed=self.webhook_allowed_cidrs, allow_http=self.webhook_allow_http)

    def secret_box(self) -> SecretBox | None:
        return SecretBox.of(self.webhook_secrets_key) if self.webhook_secrets_key is not None else None

    @model_validator(mode="after")
    def _one_way_to_tls(self) -> NotificationSettings:
        if self.smtp_tls and self.smtp_starttls:
            raise ValueError("BATON_SMTP_TLS and BATON_SMTP_STARTTLS exclude each other: choose one")
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("BATON_SMTP_USERNAME and BATON_SMTP_PASSWORD go together")
        return self
