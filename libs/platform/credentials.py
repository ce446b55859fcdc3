"""Database passwords handled so that the cleartext never leaves this process.

A role's password is sent to the server as a SCRAM-SHA-256 verifier computed here (what psql's
``\\password`` does), so neither ``log_statement`` nor ``pg_stat_statements`` ever sees it. Local
passwords live in a pgpass file (mode 0600): libpq and asyncpg read it themselves, so the URLs
handed to service processes carry no password at all.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import stringprep
import tempfile
import unicodedata
from collections.abc import Iterable
from pathlib import Path

SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)

_PROHIBITED = (
    stringprep.in_table_a1,  # unassigned code points: PostgreSQL refuses them as well
    stringprep.in_table_c12,
    stringprep.in_table_c21_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)


def saslprep(password: str) -> str:
    """RFC 4013 SASLprep as PostgreSQL applies it (``pg_saslprep``): ASCII passes unchanged, and a
    password that fails any step is used as given. Server and client must agree byte for byte."""
    if password.isascii():
        return password
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)
    )
    normalized = unicodedata.normalize("NFKC", mapped)
    if not normalized or any(table(c) for c in normalized for table in _PROHIBITED):
        return password
    if any(stringprep.in_table_d1(c) for c in normalized) and (
        not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1]))
        or any(stringprep.in_table_d2(c) for c in normalized)
    ):
        return password
    return normalized


def scram_sha256_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (RFC 5802/7677), the form
    PostgreSQL stores; given to ``ALTER ROLE ... PASSWORD`` it is stored as is."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


VERIFIER = re.compile(r"SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+")


def password_sql_literal(password: str) -> str:
    """The SQL literal to put after ``PASSWORD``: a fresh verifier, checked to hold only base64
    characters, ``$`` and ``:`` so that nothing in it can end the literal."""
    verifier = scram_sha256_verifier(password)
    if not VERIFIER.fullmatch(verifier):  # pragma: no cover - guards the format above
        raise ValueError("malformed SCRAM verifier")
    return f"'{verifier}'"


def new_password() -> str:
    """256 random bits, URL-safe: fits a URL, a pgpass line and a Kubernetes Secret unescaped."""
    return secrets.token_urlsafe(32)


def _escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def _fields(line: str) -> list[str]:
    fields: list[str] = []
    current: list[str] = []
    chars = iter(line)
    for c in chars:
        if c == "\\":
            current.append(next(chars, ""))
        elif c == ":" and len(fields) < 4:
            fields.append("".join(current))
            current = []
        else:
            current.append(c)
    fields.append("".join(current))
    return fields


class PassFile:
    """A pgpass file of Baton's roles (``*:*:*:<role>:<password>``), readable by its owner only.

    Point ``PGPASSFILE`` at it and a URL without a password logs in with the role's password.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        found: dict[str, str] = {}
        for raw in self.path.read_text().splitlines():
            if not raw.strip() or raw.startswith("#"):
                continue
            fields = _fields(raw)
            if len(fields) == 5 and fields[:3] == ["*", "*", "*"]:
                found[fields[3]] = fields[4]
        return found

    def ensure(self, roles: Iterable[str]) -> dict[str, str]:
        """The passwords of ``roles``; missing ones are generated and written (0600, atomically)."""
        known = self.read()
        wanted = list(roles)
        missing = [r for r in wanted if r not in known]
        if missing:
            known |= {role: new_password() for role in missing}
            self._write(known)
        return {role: known[role] for role in wanted}

    def _write(self, passwords: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(f"*:*:*:{_escape(role)}:{_escape(pw)}\n" for role, pw in sorted(passwords.items()))
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".pgpass-")  # created 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self.path.chmod(0o600)
