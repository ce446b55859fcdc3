"""The gateway's settings: the platform's, plus where it listens, how big a request may be and how
often each key may call."""

from __future__ import annotations

from pydantic import Field

from libs.platform.settings import BatonSettings


class GatewaySettings(BatonSettings):
    gateway_host: str = Field(
        default="127.0.0.1",
        description="Address the gateway binds: loopback locally, 0.0.0.0 in a container",
    )
    gateway_port: int = Field(default=8086, description="The gateway's HTTP port; 0 picks a free port")
    gateway_max_body_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="Largest request body accepted; a larger one is answered 413 without being read",
    )
    gateway_rate_per_s: float = Field(
        default=50.0, gt=0, description="Requests per second each key may make (token bucket, per process)"
    )
    gateway_burst: int = Field(default=100, ge=1, description="Requests a key may make at once")
    gateway_send_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a request waits for the broker to acknowledge its record (acks=all) "
        "before it is answered 503",
    )
