"""The deployment files, checked offline: Kubernetes objects against the Kubernetes schemas, KEDA
objects against KEDA's CRD schema kept in the repo, Compose against the Compose specification's
schema, and all of them against what the code says (consumer groups, topics, partitions, ports)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from libs.cli.top import fleet_groups
from libs.contracts.topics import SERVICES, TOPICS
from libs.platform import dsn, metrics
from libs.platform.settings import BatonSettings
from libs.platform.stack import kafka_version
from services.notification.settings import NotificationSettings
from tests.support.manifests import DEPLOY, of_kind, rendered_base

pytestmark = pytest.mark.contract

KUBERNETES_VERSION = "1.34.0"
PARTITIONS = {t.name: t.partitions for t in TOPICS}


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return rendered_base()


def test_every_kubernetes_object_is_valid_against_the_kubernetes_schema(
    objects: list[dict[str, Any]],
) -> None:
    checked = 0
    for obj in objects:
        if obj["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/")):
            continue  # custom resources: checked against their CRD schemas
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 15


def test_every_trigger_authentication_is_valid_and_each_scaler_reads_lag_as_its_service(
    objects: list[dict[str, Any]],
) -> None:
    """KEDA's Kafka scaler logs in over SASL_SSL as the service's own principal (which may describe
    exactly the service's groups), with the broker address taken from the service's environment."""
    crd = yaml.safe_load((DEPLOY / "k8s" / "crds" / "keda.sh_triggerauthentications.yaml").read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = _closed(version["schema"]["openAPIV3Schema"])
    auths = of_kind(objects, "TriggerAuthentication")
    assert set(auths) == {f"{s}-kafka" for s in SERVICES}
    for service in SERVICES:
        auth = auths[f"{service}-kafka"]
        jsonschema.validate(auth, schema)
        refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
        assert refs == {
            "username": (f"baton-kafka-{service}", "username"),
            "password": (f"baton-kafka-{service}", "password"),
            "ca": ("baton-kafka-ca", "ca.pem"),
        }
        for trigger in of_kind(objects, "ScaledObject")[service]["spec"]["triggers"]:
            assert trigger["authenticationRef"] == {"name": f"{service}-kafka"}
            meta = trigger["metadata"]
            assert (
                meta["bootstrapServersFromEnv"] == "KAFKA_BOOTSTRAP_SERVERS"
                and "bootstrapServers" not in meta
            )
            assert (meta["sasl"], meta["tls"]) == ("scram_sha512", "enable")


def test_the_namespace_denies_by_default_and_only_notification_reaches_out_to_public_addresses(
    objects: list[dict[str, Any]],
) -> None:
    policies = of_kind(objects, "NetworkPolicy")
    deny = policies["baton-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    wide = [
        (name, rule)
        for name, policy in policies.items()
        for rule in policy["spec"].get("egress", [])
        if any(peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for peer in rule.get("to", []))
    ]
    assert [name for name, _ in wide] == ["notification-egress"]
    [(_, rule)] = wide
    assert {"10.0.0.0/8", "169.254.0.0/16", "127.0.0.0/8"} <= set(rule["to"][0]["ipBlock"]["except"])
    config = of_kind(objects, "ConfigMap")["baton-config"]["data"]
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    for job in of_kind(objects, "Job").values():
        assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_every_scaled_object_is_valid_against_the_keda_crd_schema(objects: list[dict[str, Any]]) -> None:
    crd = yaml.safe_load((DEPLOY / "k8s" / "crds" / "keda.sh_scaledobjects.yaml").read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = _closed(version["schema"]["openAPIV3Schema"])
    scaled = of_kind(objects, "ScaledObject")
    assert set(scaled) == set(SERVICES)
    for obj in scaled.values():
        jsonschema.validate(obj, schema)


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """Structural CRD schemas prune unknown fields silently; refuse them here so typos show."""
    schema = dict(schema)
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
        if "metadata" in schema["properties"]:
            schema["properties"] = dict(schema["properties"]) | {"metadata": {"type": "object"}}
    for key in ("properties",):
        if key in schema:
            schema[key] = {k: _closed(v) for k, v in schema[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = _closed(schema[key])
    return schema


def test_each_service_has_a_safe_deployment_a_disruption_budget_and_a_lag_based_scaler(
    objects: list[dict[str, Any]],
) -> None:
    deployments = of_kind(objects, "Deployment")
    budgets = of_kind(objects, "PodDisruptionBudget")
    scaled = of_kind(objects, "ScaledObject")
    groups = fleet_groups(BatonSettings(topic_prefix=""))
    graceful = float(BatonSettings().graceful_timeout_s)
    for service in SERVICES:
        pod = deployments[service]["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["args"] == ["run", service]
        assert pod["terminationGracePeriodSeconds"] > graceful + 10, "drain + relay flush must fit"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert {"name": "ops", "containerPort": 9100} in container["ports"]
        assert container["resources"]["limits"]["memory"]
        assert budgets[service]["spec"]["selector"] == deployments[service]["spec"]["selector"]

        spec = scaled[service]["spec"]
        assert spec["scaleTargetRef"]["name"] == service
        triggers = spec["triggers"]
        assert triggers and all(t["type"] == "kafka" for t in triggers)
        for trigger in triggers:
            meta = trigger["metadata"]
            assert groups[service].get(meta["consumerGroup"]) == (meta["topic"],), (
                f"{service}: {meta['consumerGroup']} does not read {meta['topic']}"
            )
            assert meta["allowIdleConsumers"] == "false"
            assert int(meta["lagThreshold"]) > 0
        # Replicas beyond the partition count would only sit idle.
        assert spec["maxReplicaCount"] <= max(PARTITIONS[t["metadata"]["topic"]] for t in triggers)
        # The order-flow input with the most partitions is among the triggers.
        busiest = max(groups[service].items(), key=lambda kv: PARTITIONS[kv[1][0]])
        assert busiest[0] in {t["metadata"]["consumerGroup"] for t in triggers}


MIGRATOR_SECRET = "baton-db-migrator"
WEBHOOK_KEY_SECRET = "baton-webhook-secrets"
"""BATON_WEBHOOK_SECRETS_KEY: notification's (and the operators'), no other service's."""


def _secret_refs(pod: dict[str, Any]) -> set[str]:
    """Every Secret a pod spec can read: env, envFrom, volumes, projected volumes."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("secretKeyRef", "secretRef"):
                if isinstance(node.get(key), dict):
                    found.add(node[key]["name"])
            if isinstance(node.get("secret"), dict) and "secretName" in node["secret"]:
                found.add(node["secret"]["secretName"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(pod)
    return found


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_each_service_logs_in_with_its_own_secret_and_none_can_read_the_migrators(
    objects: list[dict[str, Any]],
) -> None:
    deployments = of_kind(objects, "Deployment")
    for service in SERVICES:
        pod = deployments[service]["spec"]["template"]["spec"]
        [container] = pod["containers"]
        ref = _env(container)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (f"baton-db-{service}", "url")
        assert not ref.get("optional"), "a service without its login must not start"
        own = {f"baton-db-{service}", f"baton-kafka-{service}", "baton-kafka-ca"}
        if service == "notification":
            own.add(WEBHOOK_KEY_SECRET)
        assert _secret_refs(pod) == own, (
            f"{service} may read only its own logins (database, Kafka), the cluster CA and notification its key"
        )
        kafka_env = _env(container)
        for variable, key in (("KAFKA_SASL_USERNAME", "username"), ("KAFKA_SASL_PASSWORD", "password")):
            ref = kafka_env[variable]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == (f"baton-kafka-{service}", key)
        assert pod["automountServiceAccountToken"] is False
    for name, deployment in deployments.items():
        assert MIGRATOR_SECRET not in _secret_refs(deployment["spec"]["template"]["spec"]), name


def test_the_migrate_job_runs_as_the_migrator_and_provisions_every_service_login(
    objects: list[dict[str, Any]],
) -> None:
    job = of_kind(objects, "Job")["baton-migrate"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]
    env = _env(container)
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": MIGRATOR_SECRET, "key": "url"}
    for service in SERVICES:
        ref = env[f"BATON_DB_URL_{service.upper()}"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (f"baton-db-{service}", "url")
    assert env["BATON_DB_URL_OPERATOR"]["valueFrom"]["secretKeyRef"]["name"] == "baton-db-operator"
    topics_job = of_kind(objects, "Job")["baton-topics"]
    assert MIGRATOR_SECRET not in _secret_refs(topics_job["spec"]["template"]["spec"])


def test_compose_file_follows_the_compose_specification_and_runs_every_service() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    schema = json.loads((DEPLOY / "compose" / "schema" / "compose-spec.json").read_text())
    jsonschema.validate(compose, schema)
    services = compose["services"]
    migrator = services["migrate"]["environment"]["DATABASE_URL"]
    for service in SERVICES:
        assert services[service]["command"] == ["run", service]
        assert services[service]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert "topics" in services[service]["depends_on"]
        assert services[service]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        own = services[service]["environment"]["DATABASE_URL"]
        assert dsn.user_name(own) == f"baton_{service}", "each service logs in as its own role"
        assert services["migrate"]["environment"][f"BATON_DB_URL_{service.upper()}"] == own
        assert dsn.user_name(own) != dsn.user_name(migrator)
    assert services["migrate"]["command"] == ["migrate"]
    assert services["topics"]["command"] == ["topics", "apply"]
    for needed in ("postgres", "otel-collector", "prometheus", "grafana"):
        assert needed in services
    scraped = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    names = scraped["scrape_configs"][0]["dns_sd_configs"][0]["names"]
    assert sorted(names) == sorted(SERVICES)


@pytest.mark.skipif(
    subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0
    if shutil.which("docker")
    else True,
    reason="the Docker Compose plugin is not installed here",
)
def test_docker_compose_accepts_the_file() -> None:
    subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "compose" / "compose.yaml"), "config", "--quiet"], check=True
    )


def test_the_dashboard_only_queries_metrics_baton_exports() -> None:
    exported = metrics.metric_names()
    dashboard = json.loads((DEPLOY / "grafana" / "baton.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\b(baton_[a-z_]+)\b", e)}
    assert used, "the dashboard has no queries"
    assert used <= exported, f"not exported by any service: {sorted(used - exported)}"
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("status", "latency", "lag", "dead letters"):
        assert topic in titles


def test_the_status_api_binds_loopback_by_default_and_every_interface_in_kubernetes(
    objects: list[dict[str, Any]],
) -> None:
    assert NotificationSettings().http_host == "127.0.0.1"
    [container] = of_kind(objects, "Deployment")["notification"]["spec"]["template"]["spec"]["containers"]
    assert {"name": "BATON_HTTP_HOST", "value": "0.0.0.0"} in container["env"]


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())[
        "services"
    ]
    return services


def test_the_default_compose_stack_needs_no_registry_image() -> None:
    """Everything but the opt-in observability extras is built here from Debian's packages, Maven's
    jars and the lock file; only the base image (a build argument) may come from a registry."""
    services = compose_services()
    default = {name: s for name, s in services.items() if not s.get("profiles")}
    assert set(default) == {"kafka", "postgres", "topics", "migrate", *SERVICES}
    assert {name: "build" in s for name, s in default.items()} == dict.fromkeys(default, True)
    assert services["kafka"]["build"]["dockerfile"] == "deploy/compose/kafka.Dockerfile"
    assert services["kafka"]["image"] == f"baton-kafka:{kafka_version()}", "tag the version the pom resolves"
    assert services["postgres"]["build"]["dockerfile"] == "deploy/compose/postgres.Dockerfile"
    extras = {name for name, s in services.items() if s.get("profiles")}
    assert extras == {"mailpit", "otel-collector", "jaeger", "prometheus", "grafana"}
    assert all(services[name]["profiles"] == ["observability"] for name in extras)


def test_host_clients_reach_kafka_and_the_status_api_on_loopback_ports_only() -> None:
    services = compose_services()
    kafka = services["kafka"]
    [kafka_port] = kafka["ports"]
    assert kafka_port.startswith("127.0.0.1:${BATON_KAFKA_HOST_PORT")
    assert kafka_port.split(":")[-1] in kafka["environment"]["KAFKA_LISTENERS"]
    assert "HOST://127.0.0.1:${BATON_KAFKA_HOST_PORT" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    notification = services["notification"]
    assert notification["environment"]["BATON_HTTP_HOST"] == "0.0.0.0"
    assert notification["ports"] == ["127.0.0.1:${BATON_STATUS_API_PORT:-8085}:8085"]


@pytest.mark.parametrize("name", ["Dockerfile", "kafka.Dockerfile", "postgres.Dockerfile"])
def test_each_dockerfile_takes_its_base_as_an_argument_runs_unprivileged_and_uses_standard_syntax(
    name: str,
) -> None:
    dockerfile = (DEPLOY / "compose" / name).read_text()
    assert re.match(r"(#[^\n]*\n)*ARG BASE_IMAGE=\S+\n", dockerfile), "base image is a build argument"
    stages: list[str] = []
    for image, alias in re.findall(r"^FROM (\S+)(?: AS (\S+))?$", dockerfile, re.MULTILINE):
        assert image == "${BASE_IMAGE}" or image in stages, f"FROM {image}: not the base nor an earlier stage"
        stages.append(alias)
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0", "0:0"), "the image must not run as root"
    assert not re.search(r"^RUN --|<<", dockerfile, re.MULTILINE), "BuildKit-only syntax"
    assert "COPY /run/host" not in dockerfile and "ENV PIP_CERT" not in dockerfile, "a CA is never baked in"


def test_the_app_image_installs_exactly_the_hashed_lock_before_the_code() -> None:
    dockerfile = (DEPLOY / "compose" / "Dockerfile").read_text()
    assert "--require-hashes --no-deps -r /src/requirements/runtime.lock" in dockerfile
    assert dockerfile.index("runtime.lock") < dockerfile.index("COPY libs"), "dependency layer first"
    assert "pip install -q --no-deps --no-build-isolation /src" in dockerfile
