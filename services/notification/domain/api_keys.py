"""Keys of the status API: the shared rules in ``libs/api_keys.py`` (the HTTP intake gateway uses the
same keys), named here for notification's own code."""

from libs.api_keys import (
    ALL_CHANNELS,
    KEY_PREFIX,
    OPERATOR,
    ROLES,
    VIEWER,
    ApiKey,
    RateLimiter,
    TokenBucket,
    bearer_token,
    digest,
    new_key,
    retry_after,
)

__all__ = [
    "ALL_CHANNELS",
    "KEY_PREFIX",
    "OPERATOR",
    "ROLES",
    "VIEWER",
    "ApiKey",
    "RateLimiter",
    "TokenBucket",
    "bearer_token",
    "digest",
    "new_key",
    "retry_after",
]
