"""Settings for every service, read from the environment (prefix ``BATON_``).

``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL`` and the Kafka security settings (``KAFKA_SECURITY_PROTOCOL``,
``KAFKA_SASL_*``, ``KAFKA_SSL_*``, see ``libs/platform/kafka.py``) are honoured without the prefix
because they are the names operators and tools already use.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.contracts.topics import DEFAULT_REPLICATION_FACTOR
from libs.platform.kafka import KafkaAccess, KafkaSecurity
from libs.platform.stack import KAFKA_PORT, POSTGRES_PORT
from libs.policy.channels import ChannelPolicies, load_policies


class BatonSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BATON_", env_ignore_empty=True, extra="ignore", hide_input_in_errors=True
    )

    kafka_bootstrap_servers: str = Field(
        default=f"127.0.0.1:{KAFKA_PORT}",
        validation_alias=AliasChoices("BATON_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
    )
    kafka_security: KafkaSecurity = Field(
        default_factory=KafkaSecurity.from_environment,
        description="KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* (libs/platform/kafka.py)",
    )
    database_url: SecretStr = Field(
        default=SecretStr(f"postgresql://postgres@127.0.0.1:{POSTGRES_PORT}/baton"),
        validation_alias=AliasChoices("BATON_DATABASE_URL", "DATABASE_URL"),
        description="This process's own login: a service's role, the migrator for `baton migrate`, "
        "the read-only operator role for `baton webhooks list` and `baton top`. Secret: never printed.",
    )
    schema_wait_s: float = Field(
        default=300.0,
        ge=0,
        description="How long a starting service waits for `baton migrate` (its role, its grants, this "
        "release's migrations) before it exits with one line saying what is missing",
    )
    topic_prefix: str = Field(
        default="",
        description="Prepended to every topic and consumer group: isolates test runs and environments.",
    )
    instance_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    log_level: str = "INFO"
    log_json: bool = True
    batch_max_records: int = Field(default=500, ge=1)
    db_pool_size: int = Field(default=4, ge=1)
    record_chunk: int = Field(
        default=500, ge=1, description="Records per transaction when their lock keys are known up front"
    )
    record_lanes: int = Field(
        default=4, ge=1, description="Concurrent per-record transactions of a subscription that asks for them"
    )
    graceful_timeout_s: float = 15.0
    relay_batch_size: int = 1000
    ops_port: int = Field(
        default=9100, description="/metrics, /livez and /readyz of every service; 0 picks a free port"
    )
    trace_dir: str | None = Field(
        default=None, description="Write spans as JSON lines here (read by `baton trace`)"
    )
    topic_replication_factor: int = Field(default=DEFAULT_REPLICATION_FACTOR, ge=1)
    apply_topics: bool = Field(
        default=True,
        description="Services create missing topics at start-up; false where a Job or an operator does "
        "(least privilege): they then only check that their topics exist",
    )
    channels_file: Path | None = Field(
        default=None,
        description="The per-channel policy file (countries, hold threshold, sourcing, payment deadline, "
        "returns, pickup) used instead of the packaged libs/policy/channels.yaml",
    )
    fault_relay_exit_after_send: bool = Field(
        default=False,
        description="Fault injection for tests only: the relay exits after a send is acknowledged",
    )
    fault_timer_exit_before_commit: bool = Field(
        default=False,
        description="Fault injection for tests only: the timer worker exits after applying a due timer,"
        " before its transaction commits",
    )

    @property
    def kafka(self) -> KafkaAccess:
        """The factory of every Kafka client this process opens."""
        return KafkaAccess(self.kafka_bootstrap_servers, self.kafka_security)

    def channel_policies(self) -> ChannelPolicies:
        """The per-channel policy in force; a file that cannot be used raises ``PolicyFileRefused``."""
        return load_policies(self.channels_file)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def group(self, service: str, subscription: str) -> str:
        """One consumer group per service input: a new member rebalances only that input."""
        return f"{self.topic_prefix}baton.{service}.{subscription}"
