"""Webhook signing secrets: what is accepted, how they are sealed, how several sign one delivery."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from libs.platform.secret_box import SecretBox, WebhookOperatorSettings, new_key, new_webhook_secret
from services.notification.domain import webhooks
from services.notification.settings import NotificationSettings

pytestmark = pytest.mark.unit


def whsec(n: int) -> str:
    return "whsec_" + base64.b64encode(b"k" * n).decode()


def test_a_generated_secret_is_whsec_with_32_random_bytes_and_accepted() -> None:
    secret = new_webhook_secret()
    assert webhooks.secret_problem(secret) is None
    assert len(webhooks.secret_key(secret)) == 32
    assert new_webhook_secret() != secret


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        (whsec(23), "24 to 64 bytes, not 23"),
        (whsec(1), "not 1"),
        (whsec(65), "not 65"),
        ("whsec_", "not 0"),
        ("whsec_%%%", "not base64"),
        ("chaos-secret-1234-long-enough-but-not-whsec", "whsec_<base64>"),
    ],
)
def test_a_weak_or_malformed_secret_is_refused_without_showing_it(secret: str, problem: str) -> None:
    refusal = webhooks.secret_problem(secret)
    assert refusal is not None and problem in refusal and secret not in refusal


@pytest.mark.parametrize("n", [24, 32, 64])
def test_secrets_of_24_to_64_bytes_are_accepted(n: int) -> None:
    assert webhooks.secret_problem(whsec(n)) is None


def test_several_secrets_give_one_signature_each_in_order_and_each_verifies() -> None:
    new, old = new_webhook_secret(), new_webhook_secret()
    header = webhooks.signatures([new, old], "msg_1", 1_700_000_000, b"{}")
    first, second = header.split(" ")
    assert first == webhooks.sign(new, "msg_1", 1_700_000_000, b"{}")
    assert second == webhooks.sign(old, "msg_1", 1_700_000_000, b"{}")
    assert webhooks.verify(old, "msg_1", 1_700_000_000, b"{}", header)
    assert not webhooks.verify(new_webhook_secret(), "msg_1", 1_700_000_000, b"{}", header)


def test_a_sealed_secret_opens_only_with_its_key_and_never_shows_it() -> None:
    box, other = SecretBox(new_key()), SecretBox(new_key())
    secret = new_webhook_secret()
    sealed = box.seal(secret)

    assert secret not in sealed and box.open(sealed) == secret
    assert other.open(sealed) is None
    assert box.open(sealed[:-4] + "AAAA") is None, "a changed token does not open"
    assert box.open("not a token") is None


def test_a_new_key_first_seals_and_the_old_one_still_opens_until_resealed() -> None:
    old_key, new = new_key(), new_key()
    old_box, both = SecretBox(old_key), SecretBox(f"{new}, {old_key}")
    sealed_with_old = old_box.seal("whsec_x")

    resealed = both.reseal(sealed_with_old)

    assert both.open(sealed_with_old) == "whsec_x"
    assert resealed is not None and resealed != sealed_with_old
    assert SecretBox(new).open(resealed) == "whsec_x"
    assert both.reseal(resealed) == resealed, "already under the first key: left as it is"
    assert both.reseal(SecretBox(new_key()).seal("x")) is None


@pytest.mark.parametrize("keys", ["", "not-a-key", "c2hvcnQ=", f"{new_key()},oops"])
def test_a_key_setting_that_is_not_fernet_keys_is_refused_without_echoing_it(keys: str) -> None:
    with pytest.raises(ValueError) as refused:
        SecretBox(keys)
    assert "BATON_WEBHOOK_SECRETS_KEY" in str(refused.value)
    assert not keys or keys not in str(refused.value)
    with pytest.raises(ValidationError) as invalid:
        NotificationSettings(webhook_secrets_key=SecretStr(keys))
    assert not keys or keys not in str(invalid.value)


def test_the_local_fleet_gets_one_private_key_and_loopback_receivers_and_the_cli_finds_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from libs.cli.main import local_webhook_env

    monkeypatch.setenv("BATON_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("BATON_WEBHOOK_SECRETS_KEY", raising=False)
    first = local_webhook_env({})
    again = local_webhook_env({})
    chosen = local_webhook_env(
        {"BATON_WEBHOOK_SECRETS_KEY": "k", "BATON_WEBHOOK_ALLOWED_CIDRS": "10.0.0.0/8"}
    )

    assert first == again and first["BATON_WEBHOOK_ALLOWED_CIDRS"] == "127.0.0.1/32,::1/128"
    assert (tmp_path / "webhook-secrets.key").stat().st_mode & 0o777 == 0o600
    assert chosen == {}, "what the operator set is kept"
    box = WebhookOperatorSettings().secret_box()
    assert box is not None and SecretBox(first["BATON_WEBHOOK_SECRETS_KEY"]).open(box.seal("x")) == "x"
