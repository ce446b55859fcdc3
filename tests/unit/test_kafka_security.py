"""Kafka security settings: read under the names operators know, refused early when they cannot
work, and the password never shown."""

from __future__ import annotations

import ssl

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from pydantic import ValidationError

from libs.platform.kafka import KafkaAccess, KafkaAccessRefused, KafkaSecurity, refusal
from libs.platform.settings import BatonSettings

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-do-not-show"


def sasl(**overrides: object) -> KafkaSecurity:
    values: dict[str, object] = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "intake",
        "sasl_password": SECRET,
    }
    return KafkaSecurity(**(values | overrides))


def test_the_settings_are_read_under_kafka_names_and_baton_aliases_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "scram-sha-256")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "someone")
    monkeypatch.setenv("BATON_KAFKA_SASL_USERNAME", "intake")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("KAFKA_SSL_CAFILE", "/etc/ca.pem")

    security = BatonSettings().kafka_security

    assert (security.security_protocol, security.sasl_mechanism, security.sasl_username) == (
        "SASL_SSL",
        "SCRAM-SHA-256",
        "intake",
    )
    assert security.ssl_cafile == "/etc/ca.pem"


def test_constructing_security_directly_never_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    assert KafkaSecurity().security_protocol == "PLAINTEXT"


def test_the_password_is_never_in_a_repr_a_log_line_or_a_validation_error() -> None:
    security = sasl()
    settings = BatonSettings(kafka_bootstrap_servers="k:9092", kafka_security=security)
    assert SECRET not in repr(settings) and SECRET not in str(settings) and SECRET not in security.who()
    with pytest.raises(ValidationError) as raised:
        sasl(sasl_mechanism=None)
    assert SECRET not in str(raised.value)
    assert "KAFKA_SASL_MECHANISM is needed with KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT" in str(raised.value)


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"security_protocol": "SASL_SSL"}, "KAFKA_SASL_MECHANISM is needed"),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"},
            "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
        ),
        ({"sasl_username": "intake"}, "KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not log in"),
        ({"ssl_cafile": "/ca.pem"}, "does not use TLS"),
        ({"security_protocol": "SSL", "ssl_keyfile": "/k.pem"}, "KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"}, "sasl_mechanism"),
    ],
)
def test_settings_that_cannot_work_are_refused_naming_them(values: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        KafkaSecurity(**values)


def test_every_client_gets_the_same_security_options(tmp_path: object) -> None:
    options = KafkaAccess("k:9093", sasl()).options(acks="all")
    assert options == {
        "bootstrap_servers": "k:9093",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "intake",
        "sasl_plain_password": SECRET,
        "acks": "all",
    }
    tls = KafkaAccess("k:9093", sasl(security_protocol="SASL_SSL")).options()
    assert isinstance(tls["ssl_context"], ssl.SSLContext)
    assert tls["ssl_context"].check_hostname and tls["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_an_unreadable_tls_file_is_refused_naming_its_setting() -> None:
    security = KafkaSecurity(security_protocol="SSL", ssl_cafile="/no/such/ca.pem")
    with pytest.raises(KafkaAccessRefused, match=r"^KAFKA_SSL_CAFILE: cannot read /no/such/ca.pem"):
        security.client_options()


def test_a_failed_login_is_a_refusal_and_a_dropped_connection_is_not() -> None:
    login = KafkaConnectionError("closed")
    login.__cause__ = SaslAuthenticationFailed("bad credentials")
    refused = refusal(login, "k:9093", sasl())
    assert refused is not None and str(refused) == (
        "Kafka at k:9093 refused the SASL login of user 'intake' with SCRAM-SHA-512 "
        "(KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD)"
    )
    assert refusal(KafkaConnectionError("Connection at k:9093 closed"), "k:9093", sasl()) is None
    assert refusal(ConnectionRefusedError(111, "refused"), "k:9093", sasl()) is None
