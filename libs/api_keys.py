"""Channel API keys — of the status API and of the HTTP intake gateway — and how fast each may be
used. Pure (standard library only), shared by notification and the gateway, which each keep the
keys they need from `notification.api-keys.v1` (services talk only through Kafka).

A key is 32 random bytes (256 bits): only its SHA-256 digest is stored. A fast hash is enough for a
secret with that much entropy — no one can guess a key from its digest — whereas a slow password
hash (argon2, scrypt) would only make every request cost CPU, which is what a flood of requests
would then exploit. Passwords people choose are another matter; these keys are never chosen.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass

ALL_CHANNELS = "*"
"""A key with this channel reads every channel's orders (support tools)."""

KEY_PREFIX = "baton_"


def new_key() -> str:
    """A fresh key: recognisable by its prefix (for secret scanners), 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    """What is stored and sent in place of the key: its SHA-256, lower-case hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme in any case), or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


VIEWER = "viewer"
OPERATOR = "operator"
ROLES = (VIEWER, OPERATOR)


@dataclass(frozen=True)
class ApiKey:
    """An active key, as a request presents it. ``role``: `viewer` reads, `operator` also acts on the
    fulfillment board; keys made before roles existed are viewers (they could only read). Submitting
    through the gateway depends on the channels only: a viewer key of a channel submits for it."""

    key_id: str
    channels: frozenset[str]
    role: str = VIEWER
    name: str = ""

    @property
    def who(self) -> str:
        """The key as actions record it: its name for people, and its id."""
        return f"{self.name} ({self.key_id})" if self.name else self.key_id

    @property
    def reads_all(self) -> bool:
        return ALL_CHANNELS in self.channels

    @property
    def may_act(self) -> bool:
        """Only an operator key publishes commands (move, release, reject, cancel, redeliver)."""
        return self.role == OPERATOR

    def may_read(self, channel: str) -> bool:
        """A key reads only its own channels' orders (or all with `*`); any other order is answered as
        not found, so a key cannot even learn that an order of another channel exists."""
        return ALL_CHANNELS in self.channels or channel in self.channels

    def may_submit(self, channel: str) -> bool:
        """A key submits (and cancels) orders for the channels it names, and only those: `*` is for
        support tools that read every channel, never for placing orders on a channel's behalf."""
        return channel in self.channels


class KeyRing:
    """The keys in force, kept from the commands on the key topic (`ApiKeyChanged`), in their order.

    Revoking is for good: a key id once revoked is never active again, even if an `add` with the same
    id comes later. The topic is compacted by key id, so a reader starting from its beginning sees at
    least the last command of each key, and what it builds is the same as a reader that saw them all.
    """

    def __init__(self) -> None:
        self._by_digest: dict[str, ApiKey] = {}
        self._digest_of: dict[str, str] = {}
        self._revoked: set[str] = set()

    def add(
        self, key_id: str, key_hash: str, channels: frozenset[str], role: str = VIEWER, name: str = ""
    ) -> None:
        if key_id in self._revoked:
            return
        if (old := self._digest_of.pop(key_id, None)) is not None:
            self._by_digest.pop(old, None)
        self._digest_of[key_id] = key_hash
        self._by_digest[key_hash] = ApiKey(key_id, channels, role, name)

    def revoke(self, key_id: str) -> None:
        self._revoked.add(key_id)
        if (old := self._digest_of.pop(key_id, None)) is not None:
            self._by_digest.pop(old, None)

    def find(self, key_digest: str) -> ApiKey | None:
        """The active key with this digest, or None."""
        return self._by_digest.get(key_digest)

    def __len__(self) -> int:
        return len(self._by_digest)


class TokenBucket:
    """Up to ``burst`` requests at once, refilled at ``rate_per_s``."""

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> float:
        """Take one token: 0 when there was one, otherwise the seconds until there is one."""
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate

    def full(self, now: float) -> bool:
        return self._tokens + (now - self._at) * self._rate >= self._burst

    def copy(self) -> TokenBucket:
        twin = TokenBucket(self._rate, int(self._burst), self._at)
        twin._tokens = self._tokens
        return twin


class RateLimiter:
    """One token bucket per name, at most ``max_buckets`` kept: full buckets are forgotten first (a
    fresh bucket is full anyway), then the least recently used."""

    def __init__(self, rate_per_s: float, burst: int, max_buckets: int = 10_000) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._max = max_buckets
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, name: str, now: float) -> float:
        """0 when ``name`` may go ahead; otherwise the seconds it must wait."""
        bucket = self._buckets.pop(name, None)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._forget(now)
            bucket = TokenBucket(self._rate, self._burst, now)
        self._buckets[name] = bucket  # most recently used last
        return bucket.take(now)

    def waiting(self, name: str, now: float) -> float:
        """How long ``name`` must wait before its next request (0 also for a name never seen)."""
        bucket = self._buckets.get(name)
        if bucket is None or bucket.full(now):
            return 0.0
        return max(0.0, bucket.copy().take(now))

    def __len__(self) -> int:
        return len(self._buckets)

    def _forget(self, now: float) -> None:
        for name in [n for n, b in self._buckets.items() if b.full(now)]:
            del self._buckets[name]
        while len(self._buckets) >= self._max:
            del self._buckets[next(iter(self._buckets))]


def retry_after(wait_s: float) -> str:
    """The `Retry-After` header: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
