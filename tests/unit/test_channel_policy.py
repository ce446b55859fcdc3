"""The per-channel policy file: defaults merged with each channel's overrides, every mistake
refused with one line naming the key, and `baton config` showing what is in force."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from libs.cli.main import app
from libs.contracts.topology import ServiceTopology
from libs.contracts.vocabulary import ShippingMethod
from libs.platform.service import ServiceDefinition, StartupRefused, serve
from libs.platform.settings import BatonSettings
from libs.policy.channels import (
    InTransitException,
    PolicyFileRefused,
    SourcingPolicy,
    load_policies,
    parse_policies,
)

pytestmark = pytest.mark.unit

BASE: dict[str, Any] = {
    "version": 1,
    "defaults": {
        "supported_countries": ["DE", "AT"],
        "hold_threshold": "1000",
        "returns": {"window_days": 30, "refund_shipping": False},
    },
    "channels": {
        "marketplace": {
            "returns": {"window_days": 14},
            "sourcing": {
                "policy": "ship_available",
                "fallbacks": [
                    {"after_hours": 4, "shipping_method": "standard"},
                    {"after_hours": 24, "include_stores": True},
                ],
            },
            "in_transit_exception": "refund",
        },
        "empty": None,
    },
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """``BASE`` with the value at a dotted path replaced."""
    document: dict[str, Any] = yaml.safe_load(yaml.safe_dump(BASE))
    *parents, last = path.split(".")
    node = document
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return document


def test_the_packaged_file_is_valid_and_names_the_simulated_channels() -> None:
    policies = load_policies()
    assert {"webshop", "marketplace", "pos", "phone"} <= set(policies.channels)
    assert "NO" in policies.defaults.supported_countries, "Norway survives YAML"
    assert policies.policy_for("webshop").pickup.allowed


def test_a_channel_states_only_what_differs_and_nested_sections_merge_key_by_key() -> None:
    policies = parse_policies(BASE, "test")
    market = policies.policy_for("marketplace")
    assert market.returns.window_days == 14 and market.returns.refund_shipping is False
    assert market.sourcing.policy is SourcingPolicy.SHIP_AVAILABLE
    assert [(f.after_hours, f.shipping_method, f.include_stores) for f in market.sourcing.fallbacks] == [
        (4, ShippingMethod.STANDARD, False),
        (24, None, True),
    ]
    assert market.in_transit_exception is InTransitException.REFUND
    assert market.hold_threshold == Decimal("1000") and market.supported_countries == {"DE", "AT"}
    assert policies.policy_for("empty") == policies.defaults
    assert policies.policy_for("never-named") == policies.defaults
    assert policies.defaults.sourcing.policy is SourcingPolicy.SHIP_COMPLETE


@pytest.mark.parametrize(
    ("document", "named"),
    [
        (with_change("version", 2), "version 2 is not one this release reads"),
        (
            with_change("defaults.hold_treshold", "5"),
            "defaults: hold_treshold: Extra inputs are not permitted",
        ),
        (
            with_change("channels.marketplace.returns.window_days", -1),
            "channel marketplace: returns.window_days",
        ),
        (with_change("channels.marketplace.sourcing.policy", "ship_all"), "sourcing.policy"),
        (
            with_change("defaults.supported_countries", ["DE", "Germany"]),
            "not ISO-3166 alpha-2 country codes: GERMANY",
        ),
        (with_change("defaults.supported_countries", ["DE", False]), 'quote it, "NO"'),
        (with_change("defaults.hold_threshold", 99.5), "quoted decimal string"),
        (
            with_change("channels.marketplace.sourcing.fallbacks", [{"after_hours": 8}, {"after_hours": 4}]),
            "strictly increasing after_hours",
        ),
        (
            with_change("channels.marketplace", ["not", "a", "mapping"]),
            "channel marketplace: expected a mapping",
        ),
        (with_change("extras", {}), "unknown top-level keys extras"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_every_mistake_is_refused_with_one_line_naming_it(document: Any, named: str) -> None:
    with pytest.raises(PolicyFileRefused) as refused:
        parse_policies(document, "channels.yaml")
    message = str(refused.value)
    assert named in message and "\n" not in message, message


def test_an_unreadable_or_malformed_file_is_refused_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileRefused, match="cannot read it"):
        load_policies(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\ndefaults: [\n")
    with pytest.raises(PolicyFileRefused, match=r"not valid YAML at line \d"):
        load_policies(broken)


async def test_every_service_refuses_to_start_on_a_broken_policy_file(tmp_path: Path) -> None:
    broken = tmp_path / "channels.yaml"
    broken.write_text(yaml.safe_dump(with_change("channels.marketplace.pickup.allowed", "sometimes")))
    built: list[str] = []

    def router(_: BatonSettings) -> Any:
        built.append("router")
        raise AssertionError("never reached: the policy file is checked first")

    definition = ServiceDefinition(
        topology=ServiceTopology("intake", inputs=(), emits=()),
        migrations="",
        settings=BatonSettings,
        router=router,
    )
    with pytest.raises(StartupRefused, match=r"channel marketplace: pickup\.allowed"):
        await serve(definition, BatonSettings(channels_file=broken, log_json=False))
    assert built == []


def test_config_show_marks_what_the_channel_sets_itself(tmp_path: Path) -> None:
    path = tmp_path / "channels.yaml"
    path.write_text(yaml.safe_dump(BASE))
    runner = CliRunner()
    shown = runner.invoke(app, ["config", "show", "--channel", "marketplace", "--file", str(path)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert "    window_days: 14   # channel" in lines
    assert "    refund_shipping: false" in lines, "inherited values carry no mark"
    assert "  in_transit_exception: refund   # channel" in lines
    unnamed = runner.invoke(app, ["config", "show", "--channel", "kiosk", "--file", str(path)])
    assert "# channel kiosk is not named in the file: it gets the defaults" in unnamed.output
    assert "  hold_threshold: '1000'" in unnamed.output.splitlines()
    path.write_text(yaml.safe_dump(with_change("defaults.payment", {"reservation_minutes": 0})))
    checked = runner.invoke(app, ["config", "check", str(path)])
    assert checked.exit_code == 1
    assert "defaults: payment.reservation_minutes" in checked.output
