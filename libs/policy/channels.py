"""Per-channel policy: what each sales channel allows and how Baton treats its orders.

One versioned YAML file (the packaged ``libs/policy/channels.yaml``, or ``BATON_CHANNELS_FILE``)
holds ``defaults`` and per-channel overrides; nested sections merge key by key, so a channel states
only what differs. Every service loads it at start-up and refuses to start on a mistake, with one
line naming the key (``PolicyFileRefused``). Use cases look a channel up (``policy_for``) and hand
the values their domain rules need; an unknown channel gets the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from libs.contracts.vocabulary import ShippingMethod
from libs.policy import ConfigurationRefused

SUPPORTED_VERSIONS = (1,)


class SourcingPolicy(StrEnum):
    SHIP_COMPLETE = "ship_complete"
    """All of an order ships together, once all of it is in stock (Baton's behaviour before)."""
    SHIP_AVAILABLE = "ship_available"
    """What is in stock now ships now; the rest is backordered as its own shipment."""


class InTransitException(StrEnum):
    RESHIP = "reship"
    REFUND = "refund"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Fallback(_Section):
    """A wider search for a line backordered longer than ``after_hours``."""

    after_hours: float = Field(gt=0)
    shipping_method: ShippingMethod | None = Field(
        default=None, description="accept a shipment by this method instead (e.g. express -> standard)"
    )
    include_stores: bool = Field(default=False, description="stores join the candidate locations")


class Sourcing(_Section):
    policy: SourcingPolicy = SourcingPolicy.SHIP_COMPLETE
    fallbacks: tuple[Fallback, ...] = ()

    @field_validator("fallbacks")
    @classmethod
    def _ascending(cls, tiers: tuple[Fallback, ...]) -> tuple[Fallback, ...]:
        hours = [t.after_hours for t in tiers]
        if hours != sorted(hours) or len(set(hours)) != len(hours):
            raise ValueError("fallback tiers must have strictly increasing after_hours")
        return tiers


class Payment(_Section):
    reservation_minutes: float = Field(default=30, gt=0, le=60 * 24 * 30)


class Returns(_Section):
    window_days: int = Field(default=30, ge=0, le=3650)
    refund_shipping: bool = False


class Pickup(_Section):
    allowed: bool = False
    transfer_from_warehouse: bool = False
    collect_within_days: float = Field(
        default=7, gt=0, le=365, description="days a parcel waits at the store before it is not_collected"
    )


class ChannelPolicy(_Section):
    """The policy in force for one channel (the defaults with its overrides applied)."""

    supported_countries: frozenset[str] = Field(min_length=1)
    hold_threshold: Decimal = Field(ge=0)
    sourcing: Sourcing = Sourcing()
    payment: Payment = Payment()
    returns: Returns = Returns()
    pickup: Pickup = Pickup()
    in_transit_exception: InTransitException = InTransitException.RESHIP

    @field_validator("supported_countries", mode="before")
    @classmethod
    def _countries(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple | set | frozenset):
            if any(isinstance(c, bool) for c in value):
                raise ValueError('YAML reads NO (Norway) as false: quote it, "NO"')
            codes = [str(c).strip().upper() for c in value]
            bad = [c for c in codes if len(c) != 2 or not c.isalpha()]
            if bad:
                raise ValueError(f"not ISO-3166 alpha-2 country codes: {', '.join(bad)}")
            return frozenset(codes)
        return value

    @field_validator("hold_threshold", mode="before")
    @classmethod
    def _money(cls, value: Any) -> Any:
        if isinstance(value, float):
            raise ValueError('write money as a quoted decimal string, e.g. "1000.00"')
        return value


class ChannelPolicies(_Section):
    """The whole file, resolved: the defaults and every named channel's effective policy."""

    version: Literal[1]
    defaults: ChannelPolicy
    channels: Mapping[str, ChannelPolicy] = Field(default_factory=dict)
    overrides: Mapping[str, Mapping[str, Any]] = Field(default_factory=dict)
    """What each channel states itself (for ``baton config show``: which values are its own)."""
    source: str = "libs/policy/channels.yaml"

    def policy_for(self, channel: str) -> ChannelPolicy:
        """The channel's policy; a channel the file does not name gets the defaults."""
        return self.channels.get(channel, self.defaults)


class PolicyFileRefused(ConfigurationRefused):
    """The channels file cannot be used; the message is the one line an operator needs."""


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _one_line(error: ValidationError, where: str) -> str:
    first = error.errors()[0]
    path = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {path}: {first['msg']}{more}"


def parse_policies(raw: Any, source: str) -> ChannelPolicies:
    """Validate a channels document; a mistake raises ``PolicyFileRefused`` naming the key."""
    if not isinstance(raw, Mapping):
        raise PolicyFileRefused(
            f"channels file {source}: expected a mapping with version, defaults, channels"
        )
    unknown = set(raw) - {"version", "defaults", "channels"}
    if unknown:
        raise PolicyFileRefused(
            f"channels file {source}: unknown top-level keys {', '.join(sorted(unknown))}"
        )
    if raw.get("version") not in SUPPORTED_VERSIONS:
        raise PolicyFileRefused(
            f"channels file {source}: version {raw.get('version')!r} is not one this release reads "
            f"({', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    defaults_raw = raw.get("defaults") or {}
    channels_raw = raw.get("channels") or {}
    if not isinstance(defaults_raw, Mapping) or not isinstance(channels_raw, Mapping):
        raise PolicyFileRefused(f"channels file {source}: defaults and channels must be mappings")
    try:
        defaults = ChannelPolicy.model_validate(defaults_raw)
    except ValidationError as exc:
        raise PolicyFileRefused(_one_line(exc, f"channels file {source}, defaults")) from None
    channels: dict[str, ChannelPolicy] = {}
    for name, override in channels_raw.items():
        if not isinstance(override, Mapping | None):
            raise PolicyFileRefused(f"channels file {source}, channel {name}: expected a mapping")
        try:
            channels[str(name)] = ChannelPolicy.model_validate(_merge(defaults_raw, override or {}))
        except ValidationError as exc:
            raise PolicyFileRefused(_one_line(exc, f"channels file {source}, channel {name}")) from None
    return ChannelPolicies(
        version=raw["version"],
        defaults=defaults,
        channels=channels,
        overrides={str(k): dict(v or {}) for k, v in channels_raw.items()},
        source=source,
    )


def load_policies(path: Path | None = None) -> ChannelPolicies:
    """The packaged policy file (package data: an installed Baton has it), or the one at ``path``."""
    if path is None:
        return _packaged()
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyFileRefused(f"channels file {path}: cannot read it ({exc.strerror})") from None
    return _parse_yaml(text, str(path))


def _parse_yaml(text: str, source: str) -> ChannelPolicies:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise PolicyFileRefused(f"channels file {source}: not valid YAML{where}") from None
    return parse_policies(raw, source)


@cache
def _packaged() -> ChannelPolicies:
    text = resources.files("libs.policy").joinpath("channels.yaml").read_text()
    return _parse_yaml(text, "libs/policy/channels.yaml (packaged)")
