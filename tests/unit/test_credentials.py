"""Passwords reach PostgreSQL only as SCRAM verifiers, and local ones live in a private pgpass file."""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
from pathlib import Path

import pytest

from libs.platform.credentials import (
    VERIFIER,
    PassFile,
    password_sql_literal,
    saslprep,
    scram_sha256_verifier,
)

pytestmark = pytest.mark.unit

# RFC 7677, section 3: user "user", password "pencil".
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
NONCE = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
AUTH_MESSAGE = f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={NONCE},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={NONCE}"
CLIENT_PROOF = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
SERVER_SIGNATURE = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_the_verifier_authenticates_the_rfc_7677_exchange_as_a_server_would() -> None:
    verifier = scram_sha256_verifier("pencil", salt=SALT)
    iterations, salt, stored_key, server_key = _decode(verifier)
    assert (iterations, salt) == (4096, SALT)
    # The server proves itself with ServerKey ...
    signature = hmac.new(server_key, AUTH_MESSAGE.encode(), "sha256").digest()
    assert base64.b64encode(signature).decode() == SERVER_SIGNATURE
    # ... and checks the client's proof against StoredKey.
    client_signature = hmac.new(stored_key, AUTH_MESSAGE.encode(), "sha256").digest()
    client_key = bytes(a ^ b for a, b in zip(CLIENT_PROOF, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key


def test_a_wrong_password_gives_another_verifier_and_every_call_a_fresh_salt() -> None:
    assert scram_sha256_verifier("pencil", salt=SALT) != scram_sha256_verifier("pencel", salt=SALT)
    assert scram_sha256_verifier("pencil") != scram_sha256_verifier("pencil")


@pytest.mark.parametrize("password", ["plain", "it's", "back\\slash", "ünï", "'; DROP ROLE x; --"])
def test_the_sql_literal_is_only_the_verifier_whatever_the_password(password: str) -> None:
    literal = password_sql_literal(password)
    assert literal.startswith("'SCRAM-SHA-256$4096:") and literal.endswith("'")
    assert VERIFIER.fullmatch(literal[1:-1])
    assert password not in literal


def test_saslprep_matches_postgresql_ascii_unchanged_unicode_normalised_invalid_kept() -> None:
    assert saslprep("I\x08X") == "I\x08X"  # pure ASCII is never touched, control characters included
    assert saslprep("\ufb01x") == "fix"  # NFKC: the ligature becomes two letters
    assert saslprep("a\u00adb") == "ab"  # soft hyphen maps to nothing
    assert saslprep("a\u2003b") == "a b"  # a non-ASCII space becomes a space
    assert saslprep("\u0627a\u0627") == "\u0627a\u0627"  # bidi rules broken: used as given


def test_the_pass_file_is_private_keeps_existing_passwords_and_adds_missing_ones(tmp_path: Path) -> None:
    path = tmp_path / "pgpass"
    first = PassFile(path).ensure(["baton_intake", "baton_operator"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = PassFile(path).ensure(["baton_intake", "baton_validation"])
    assert again["baton_intake"] == first["baton_intake"]
    assert set(PassFile(path).read()) == {"baton_intake", "baton_operator", "baton_validation"}
    assert len(set(PassFile(path).read().values())) == 3


def test_pass_file_fields_with_colons_and_backslashes_read_back(tmp_path: Path) -> None:
    path = tmp_path / "pgpass"
    PassFile(path)._write({"odd:role": "pa:ss\\word"})
    assert "odd\\:role:pa\\:ss\\\\word" in path.read_text()
    assert PassFile(path).read() == {"odd:role": "pa:ss\\word"}


def _decode(verifier: str) -> tuple[int, bytes, bytes, bytes]:
    mechanism_iterations_salt, keys = verifier.split("$", 1)[1].split("$")
    iterations, salt = mechanism_iterations_salt.split(":")
    stored_key, server_key = keys.split(":")
    return int(iterations), base64.b64decode(salt), base64.b64decode(stored_key), base64.b64decode(server_key)
