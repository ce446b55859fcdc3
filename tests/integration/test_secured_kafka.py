"""The secured broker: refused logins and certificates say why in one line; each principal may do
exactly what libs/contracts/acls.py grants, and is denied the rest."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from libs.contracts import topics
from libs.contracts.acls import PUBLIC_TOPICS, SERVICE_TOPICS, grants, service_writes
from libs.contracts.topics import SERVICES, TOPICS, dead_letter_topic
from libs.platform.acls import apply_acls
from libs.platform.kafka import (
    KafkaAccess,
    KafkaAccessRefused,
    KafkaSecurity,
    TopicsMissing,
    check_access,
    ensure_topics,
)
from libs.platform.settings import BatonSettings
from tests.support.infra import Environment, Infra, free_port, fresh_environment, fresh_name

pytestmark = pytest.mark.integration

DENIED = (TopicAuthorizationFailedError, GroupAuthorizationFailedError, ClusterAuthorizationFailedError)


@pytest.fixture(scope="module")
async def environment(secure_infra: Infra) -> AsyncIterator[Environment]:
    """A fresh prefix with its topics and ACLs on the secured broker (as admin) and a fresh database
    with a role per service; grants revoked and roles dropped after."""
    environment = await fresh_environment(secure_infra, "sec")
    try:
        yield environment
    finally:
        await environment.drop()


@pytest.fixture(scope="module")
def env(environment: Environment) -> BatonSettings:
    """The environment's settings: its prefix, the admin's Kafka login."""
    return environment.settings


def broker_of(infra: Infra) -> KafkaAccess:
    assert infra.secured is not None
    return infra.kafka


def as_principal(infra: Infra, principal: str) -> KafkaAccess:
    assert infra.secured is not None
    return infra.secured.access(principal)


async def denied_reading(kafka: KafkaAccess, topic: str, group: str) -> BaseException:
    """Read ``topic`` in a consumer group (an assigned consumer is denied silently); the error, or
    fail after a deadline if reading is allowed."""
    consumer = kafka.consumer(topic, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        await consumer.start()
        async with asyncio.timeout(30):
            while True:
                await consumer.getmany(timeout_ms=300)
    except DENIED as exc:
        error: BaseException = exc
        return error
    finally:
        await consumer.stop()


async def denied_writing(kafka: KafkaAccess, topic: str) -> BaseException:
    producer = kafka.producer(acks="all", request_timeout_ms=10000)
    try:
        await producer.start()
        await asyncio.wait_for(producer.send_and_wait(topic, b"{}", key=b"k"), 30)
    except DENIED as exc:
        error: BaseException = exc
        return error
    finally:
        await producer.stop()
    raise AssertionError(f"writing {topic} was allowed")


async def writes(kafka: KafkaAccess, topic: str) -> None:
    producer = kafka.producer(enable_idempotence=True, acks="all")
    try:
        await producer.start()
        await asyncio.wait_for(producer.send_and_wait(topic, b"{}", key=b"k"), 30)
    finally:
        await producer.stop()


async def reads(kafka: KafkaAccess, topic: str, group: str) -> None:
    """Joins the group and gets the topic's partitions assigned (proof it may read)."""
    consumer = kafka.consumer(topic, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        await consumer.start()
        async with asyncio.timeout(30):
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=300)
    finally:
        await consumer.stop()


# ---------------------------------------------------------------- refusals name the setting


async def test_a_service_with_a_wrong_password_stops_at_start_up_with_one_line_naming_the_setting(
    secure_infra: Infra, environment: Environment, tmp_path: Path
) -> None:
    wrong = "not-the-password-" + fresh_name()
    process_env = environment.env_for("intake") | {"BATON_KAFKA_SASL_PASSWORD": wrong, "BATON_OPS_PORT": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "libs.cli.main", "run", "intake"],
        env=process_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 78, text
    assert (
        f"Kafka at {secure_infra.bootstrap_servers} refused the SASL login of user 'intake' with "
        "SCRAM-SHA-512 (KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD)" in text
    )
    assert "Traceback" not in text
    assert wrong not in text
    assert "waiting for Kafka" not in text


async def test_a_cli_command_with_a_broker_certificate_it_does_not_trust_says_so_naming_the_ca_file(
    secure_infra: Infra, environment: Environment, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    other_ca.write_bytes(_self_signed("Someone else's CA", key).public_bytes(serialization.Encoding.PEM))
    process_env = (
        environment.service_env()
        | secure_infra.principal_env("admin")
        | {"BATON_KAFKA_SSL_CAFILE": str(other_ca)}
    )
    done = subprocess.run(
        [sys.executable, "-m", "libs.cli.main", "topics", "apply"],
        env=process_env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 78, done.stderr
    assert done.stderr.decode().strip() == (
        f"baton: Kafka's certificate at {secure_infra.bootstrap_servers} is not trusted: "
        "self-signed certificate in certificate chain (KAFKA_SSL_CAFILE)"
    )


async def test_a_client_certificate_from_another_ca_is_refused_naming_the_certificate_settings(
    secure_infra: Infra, tmp_path: Path
) -> None:
    assert secure_infra.secured is not None
    key = ec.generate_private_key(ec.SECP256R1())
    cert_file, key_file = tmp_path / "rogue.pem", tmp_path / "rogue.key"
    cert_file.write_bytes(_self_signed("intake", key).public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ca = str(secure_infra.secured.ca_file)
    rogue = KafkaSecurity(
        security_protocol="SSL", ssl_cafile=ca, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)
    )
    with pytest.raises(
        KafkaAccessRefused,
        match=r"refused our client certificate .*\(KAFKA_SSL_CERTFILE / KAFKA_SSL_KEYFILE\)",
    ):
        await check_access(KafkaAccess(secure_infra.secured.ssl_bootstrap_servers, rogue))

    issued_cert, issued_key = secure_infra.secured.client_certificate("baton-test-client")
    issued = KafkaSecurity(
        security_protocol="SSL", ssl_cafile=ca, ssl_certfile=str(issued_cert), ssl_keyfile=str(issued_key)
    )
    await check_access(KafkaAccess(secure_infra.secured.ssl_bootstrap_servers, issued))


async def test_a_broker_that_is_down_is_a_transient_error_not_a_refusal(secure_infra: Infra) -> None:
    assert secure_infra.secured is not None
    down = KafkaAccess(f"127.0.0.1:{free_port()}", secure_infra.secured.security("intake"))
    with pytest.raises(Exception) as raised:
        await check_access(down, timeout_s=3)
    assert not isinstance(raised.value, KafkaAccessRefused)
    assert "no Kafka broker reachable" in str(raised.value)


def _self_signed(common_name: str, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


# ---------------------------------------------------------------- least privilege, per principal


def _not_read_by(service: str) -> str:
    return next(t.name for t in TOPICS if t.name not in SERVICE_TOPICS[service].reads)


def _not_written_by(service: str) -> str:
    return next(t.name for t in TOPICS if t.name not in service_writes(service))


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_principal_is_denied_topics_and_groups_outside_its_acls(
    secure_infra: Infra, env: BatonSettings, service: str
) -> None:
    kafka, p = as_principal(secure_infra, service), env.topic_prefix
    own_group = f"{p}baton.{service}.probe-{fresh_name()}"
    other = next(s for s in SERVICES if s != service)

    read_topic = SERVICE_TOPICS[service].reads[0]
    await reads(kafka, p + read_topic, own_group)
    await writes(kafka, p + dead_letter_topic(service))

    denied = await denied_reading(kafka, p + _not_read_by(service), own_group)
    assert isinstance(denied, TopicAuthorizationFailedError)
    denied = await denied_reading(kafka, p + read_topic, f"{p}baton.{other}.probe-{fresh_name()}")
    assert isinstance(denied, GroupAuthorizationFailedError)
    denied = await denied_writing(kafka, p + _not_written_by(service))
    assert isinstance(denied, TopicAuthorizationFailedError)
    denied = await denied_writing(kafka, p + dead_letter_topic(other))
    assert isinstance(denied, TopicAuthorizationFailedError)


async def test_the_channel_may_only_submit_orders_and_cancel_requests(
    secure_infra: Infra, env: BatonSettings
) -> None:
    channel, p = as_principal(secure_infra, "channel"), env.topic_prefix
    await writes(channel, p + topics.ORDERS_SUBMITTED)
    await writes(channel, p + topics.ORDERS_CANCEL_REQUESTED)
    assert isinstance(await denied_writing(channel, p + topics.ORDERS_STATUS), TopicAuthorizationFailedError)
    assert isinstance(
        await denied_writing(channel, p + topics.CATALOG_PRODUCTS), TopicAuthorizationFailedError
    )
    denied = await denied_reading(channel, p + topics.ORDERS_SUBMITTED, f"{p}reader.{fresh_name()}")
    assert isinstance(denied, TopicAuthorizationFailedError | GroupAuthorizationFailedError)


async def test_the_gateway_writes_orders_and_cancel_requests_and_follows_the_keys_without_a_group(
    secure_infra: Infra, env: BatonSettings
) -> None:
    """Its adapter, as principal `gateway`, reads a key the operator wrote; it may write nothing else
    (not even a key: a gateway cannot grant itself access) and read nothing in a consumer group."""
    from libs.api_keys import digest
    from libs.contracts.notification import ApiKeyChanged
    from services.gateway.adapters.kafka import KafkaKeyDirectory

    gateway, p = as_principal(secure_infra, "gateway"), env.topic_prefix
    await writes(gateway, p + topics.ORDERS_SUBMITTED)
    await writes(gateway, p + topics.ORDERS_CANCEL_REQUESTED)
    for topic in (topics.NOTIFICATION_API_KEYS, topics.ORDERS_STATUS, topics.CATALOG_PRODUCTS):
        assert isinstance(await denied_writing(gateway, p + topic), TopicAuthorizationFailedError), topic
    denied = await denied_reading(gateway, p + topics.ORDERS_SUBMITTED, f"{p}baton.gateway.{fresh_name()}")
    assert isinstance(denied, TopicAuthorizationFailedError | GroupAuthorizationFailedError)

    command = ApiKeyChanged(
        action="add", key_id=f"key_{fresh_name()}", key_hash=digest("baton_k"), channels=["shop"]
    )
    operator = as_principal(secure_infra, "operator")
    producer = operator.producer(enable_idempotence=True, acks="all")
    try:
        await producer.start()
        await producer.send_and_wait(
            p + topics.NOTIFICATION_API_KEYS, command.model_dump_json().encode(), key=command.key_id.encode()
        )
    finally:
        await producer.stop()
    keys = KafkaKeyDirectory(gateway, p + topics.NOTIFICATION_API_KEYS)
    try:
        await keys.start()
        async with asyncio.timeout(30):
            while not keys.ready():
                await asyncio.sleep(0.1)
        found = keys.find(digest("baton_k"))
        assert found is not None and found.key_id == command.key_id and found.may_submit("shop")
    finally:
        await keys.stop()


async def test_the_reader_reads_public_topics_in_its_own_groups_only(
    secure_infra: Infra, env: BatonSettings
) -> None:
    reader, p = as_principal(secure_infra, "reader"), env.topic_prefix
    group = f"{p}reader.dashboard-{fresh_name()}"
    assert topics.ORDERS_STATUS in PUBLIC_TOPICS
    await reads(reader, p + topics.ORDERS_STATUS, group)
    internal = await denied_reading(reader, p + topics.facts_topic("intake"), group)
    assert isinstance(internal, TopicAuthorizationFailedError)
    foreign_group = await denied_reading(reader, p + topics.ORDERS_STATUS, f"{p}baton.intake.{fresh_name()}")
    assert isinstance(foreign_group, GroupAuthorizationFailedError)
    assert isinstance(await denied_writing(reader, p + topics.ORDERS_STATUS), TopicAuthorizationFailedError)


async def test_the_operator_lists_dead_letters_and_reads_lag_but_may_not_consume_or_write_outputs(
    secure_infra: Infra, env: BatonSettings
) -> None:
    from libs.cli.dlq import read_dead_letters
    from libs.cli.top import fleet_groups, take_snapshot
    from libs.platform.lag import LagProbe

    assert secure_infra.secured is not None
    operator = env.model_copy(update={"kafka_security": secure_infra.secured.security("operator")})
    marker = fresh_name("dead-").encode()
    admin = broker_of(secure_infra).producer(acks="all")
    try:
        await admin.start()
        await admin.send_and_wait(env.topic(dead_letter_topic("intake")), marker, key=b"k")
    finally:
        await admin.stop()
    assert marker in [d.value for d in await read_dead_letters(operator)]
    probe = LagProbe(operator.kafka)
    try:
        snapshot = await take_snapshot(operator, probe, fleet_groups(operator))
    finally:
        await probe.stop()
    assert {row.group for rows in snapshot.lags.values() for row in rows} >= {
        operator.group("allocation", "order_facts")
    }
    await writes(operator.kafka, operator.topic(topics.NOTIFICATION_SUBSCRIPTIONS))  # webhooks add
    denied = await denied_writing(operator.kafka, operator.topic(topics.ORDERS_REFUSED))
    assert isinstance(denied, TopicAuthorizationFailedError)
    denied = await denied_reading(
        operator.kafka, operator.topic(topics.ORDERS_REFUSED), f"{env.topic_prefix}baton.x"
    )
    assert isinstance(denied, TopicAuthorizationFailedError | GroupAuthorizationFailedError)


# ---------------------------------------------------------------- topics and ACLs as data


async def test_applying_the_acls_again_changes_nothing(secure_infra: Infra, env: BatonSettings) -> None:
    changes = await apply_acls(
        broker_of(secure_infra), grants(env.topic_prefix), prune_prefix=env.topic_prefix
    )
    assert (changes.created, changes.deleted) == ([], [])


async def test_a_service_that_may_not_create_topics_checks_that_its_topics_exist(
    secure_infra: Infra, env: BatonSettings
) -> None:
    assert secure_infra.secured is not None
    intake = env.model_copy(update={"kafka_security": secure_infra.secured.security("intake")})
    needed = [*SERVICE_TOPICS["intake"].reads, *service_writes("intake")]
    assert await ensure_topics(intake, needed) == []  # creation denied, topics there: fine
    with pytest.raises(TopicsMissing, match="not-there"):
        await ensure_topics(intake.model_copy(update={"apply_topics": False}), [*needed, "not-there.v1"])


async def test_a_service_runs_ready_as_its_own_principal_and_reads_its_lag(
    environment: Environment, env: BatonSettings, tmp_path: Path
) -> None:
    port = free_port()
    # As deployed: its own Kafka principal and its own database role.
    process_env = environment.env_for("allocation") | {"BATON_OPS_PORT": str(port)}
    log = (tmp_path / "allocation.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "libs.cli.main", "run", "allocation"], env=process_env, stdout=log, stderr=log
    )
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 60
            metrics = ""
            while f'group="{env.group("allocation", "order_facts")}"' not in metrics:
                assert process.poll() is None, (tmp_path / "allocation.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "allocation.log").read_text()[-3000:]
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as ready:
                        if ready.status == 200:
                            async with session.get(f"http://127.0.0.1:{port}/metrics") as r:
                                metrics = await r.text()
                await asyncio.sleep(0.5)
        assert "Authorization" not in (tmp_path / "allocation.log").read_text()
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
