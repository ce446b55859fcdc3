"""The Kubernetes base as objects, and the environment it gives a container — for the offline checks
of the manifests and for the production-profile test, which runs each service with exactly that
environment (values that name cluster hosts or Secrets resolved to this machine's)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_BASE = DEPLOY / "k8s" / "base"


def rendered_base() -> list[dict[str, Any]]:
    """`kubectl kustomize` when kubectl exists; else the kustomization's resources with its namespace."""
    if shutil.which("kubectl"):
        out = subprocess.run(
            ["kubectl", "kustomize", str(K8S_BASE)], capture_output=True, text=True, check=True
        ).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    kustomization = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S_BASE / resource).read_text()):
            if doc:
                if doc["kind"] != "Namespace":
                    doc["metadata"]["namespace"] = kustomization["namespace"]
                docs.append(doc)
    return docs


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def container_env(
    objects: list[dict[str, Any]],
    container: dict[str, Any],
    secret: Callable[[str, str], str],
    pod_name: str,
) -> dict[str, str]:
    """The environment Kubernetes would give ``container``: its ConfigMaps (`envFrom`), then its own
    `env` entries, Secret keys read through ``secret(name, key)``. Optional keys that ``secret`` does
    not know (KeyError) are left out, as Kubernetes does."""
    config_maps = of_kind(objects, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= {k: str(v) for k, v in config_maps[source["configMapRef"]["name"]]["data"].items()}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            continue
        source = entry["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name", source
            env[entry["name"]] = pod_name
        else:
            ref = source["secretKeyRef"]
            try:
                env[entry["name"]] = secret(ref["name"], ref["key"])
            except KeyError:
                if not ref.get("optional"):
                    raise
    return env


def localised(env: Mapping[str, str], here: Mapping[str, str]) -> dict[str, str]:
    """The same variables, with the values that name cluster resources (broker, CA path, collector,
    SMTP relay) replaced by where they are on this machine: ``here`` maps variable -> local value."""
    return {name: here.get(name, value) for name, value in env.items()}
