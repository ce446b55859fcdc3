"""Baton's alerts, checked offline: Prometheus's own `promtool` accepts the rules and the Compose
Prometheus configuration and runs the alerts' unit tests (series in, alerts out); the Kubernetes
PrometheusRule and PodMonitor are valid against the Prometheus Operator's CRD schemas and carry the
same rules; every metric and label the rules use is one Baton exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from libs.contracts.topics import SERVICES
from libs.platform import metrics
from tests.deploy.test_manifests import _closed
from tests.support.manifests import of_kind, rendered_base
from tests.support.promtool import BUILD_TIMEOUT_S, PromtoolUnavailable, promtool

pytestmark = pytest.mark.contract

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "compose" / "prometheus-rules.yml"
RULE_TESTS = DEPLOY / "compose" / "prometheus-rules.test.yml"
CRDS = DEPLOY / "k8s" / "crds"

ALERTS = {
    "BatonConsumerLagGrowing",
    "BatonOutboxBacklogOld",
    "BatonDeadLettering",
    "BatonWebhookFailureRatio",
    "BatonWebhookDeliveriesDead",
    "BatonEmailsDead",
    "BatonServiceNotReady",
    "BatonServiceAbsent",
}


def rules() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return rendered_base()


@pytest.fixture(scope="module")
def checker() -> Path:
    try:
        return promtool()
    except PromtoolUnavailable as missing:
        pytest.skip(str(missing))


# The first run builds promtool (minutes); the tests that need it may take that long once.
builds_promtool = pytest.mark.timeout(BUILD_TIMEOUT_S + 120)


def validate(obj: dict[str, Any], crd_file: str) -> None:
    """Against the CRD's v1 schema, closed to unknown fields. The schema's own patterns are Go
    regular expressions (``(?i)`` inside), so the schema is used as is, not checked as JSON Schema."""
    crd = yaml.safe_load((CRDS / crd_file).read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _closed(version["schema"]["openAPIV3Schema"])
    jsonschema.validators.validator_for(schema)(schema).validate(obj)


def test_every_alert_is_there_with_a_severity_a_summary_and_a_description() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert set(alerts) == ALERTS
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name


def test_the_alerts_use_only_metrics_and_labels_baton_exports() -> None:
    exported = metrics.metric_names()
    labels = {
        name: set(collector._labelnames)
        for collector in metrics.REGISTRY._collector_to_names
        if hasattr(collector, "_labelnames")
        for name in metrics.REGISTRY._collector_to_names[collector]
    }
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for rule in rules():
        expr = rule["expr"]
        used = set(re.findall(r"(?<![:\w])(baton_[a-z_]+)", expr))
        assert used <= exported, f"{rule.get('alert') or rule['record']}: not exported: {used - exported}"
        for name, matchers in re.findall(r"(?<![:\w])(baton_[a-z_]+)\{([^}]*)\}", expr):
            matched = set(re.findall(r"(\w+)\s*[=!]~?", matchers))
            assert matched <= labels[name], f"{name} has no label {matched - labels[name]}"
        for grouping in re.findall(r"\bby \(([^)]*)\)", expr):
            grouped = {label.strip() for label in grouping.split(",")}
            assert grouped <= set().union(*labels.values()), f"no metric has labels {grouped}"
        for name in re.findall(r"\b(\w+:baton_[a-z_]+:\w+)", expr):
            assert name in recorded, f"{name} is not recorded by any rule"


def test_a_missing_service_is_noticed_for_every_service() -> None:
    [absent] = [rule for rule in rules() if rule.get("alert") == "BatonServiceAbsent"]
    assert re.findall(r'absent\(baton_ready\{service="(\w+)"\}\)', absent["expr"]) == list(SERVICES)


@builds_promtool
def test_promtool_accepts_the_rules_and_the_compose_prometheus_configuration(checker: Path) -> None:
    for command in (
        ["check", "rules", str(RULES)],
        ["check", "config", "--syntax-only", str(DEPLOY / "compose" / "prometheus.yml")],
    ):
        checked = subprocess.run([str(checker), *command], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr


@builds_promtool
def test_the_alerts_fire_when_their_unit_tests_say_and_stay_quiet_otherwise(checker: Path) -> None:
    tested = subprocess.run(
        [str(checker), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    covered = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    assert covered == ALERTS, "every alert has a unit test"


def test_compose_prometheus_loads_the_rules_file(objects: list[dict[str, Any]]) -> None:
    config = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    service = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())["services"]["prometheus"]
    mounted = {
        target.removesuffix(":ro"): source for source, target in (v.split(":", 1) for v in service["volumes"])
    }
    for path in config["rule_files"]:
        assert mounted[path] == "./prometheus-rules.yml", f"{path} is not the rules file"


def test_the_prometheus_rule_carries_the_same_rules_and_matches_the_operator_schema(
    objects: list[dict[str, Any]],
) -> None:
    [rule] = of_kind(objects, "PrometheusRule").values()
    validate(rule, "monitoring.coreos.com_prometheusrules.yaml")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_the_pod_monitor_scrapes_every_service_on_its_ops_port(objects: list[dict[str, Any]]) -> None:
    [monitor] = of_kind(objects, "PodMonitor").values()
    validate(monitor, "monitoring.coreos.com_podmonitors.yaml")
    selector = monitor["spec"]["selector"]["matchLabels"]
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    deployments = of_kind(objects, "Deployment")
    for service in SERVICES:
        pod = deployments[service]["spec"]["template"]
        assert selector.items() <= pod["metadata"]["labels"].items(), f"{service} is not selected"
        [container] = pod["spec"]["containers"]
        assert endpoint["port"] in {p.get("name") for p in container["ports"]}
