"""Writes the ACL table (``libs/contracts/acls.py``) to the cluster: ``baton acls apply``.

Kafka's own ``kafka-acls`` (``AclCommand``) lives in the ``kafka-tools`` artifact, which the local
broker's jars do not include, and it starts a JVM per call, one call per resource pattern and
principal set: some forty JVMs (a minute and more on two cores) for Baton's table, and it only
adds, so it cannot say what is already there. aiokafka's admin client has no ACL calls, but
aiokafka ships the wire structures of the ACL API (``CreateAcls``, ``DescribeAcls``,
``DeleteAcls`` v1, which Kafka 2.0 to 4.x serve): this module sends them over the admin
client's connection. Applying is then one round trip per request, idempotent (it reads what is
there and creates only what is missing) and can prune grants the table no longer has.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import (
    CreateAclsRequest_v1,
    DeleteAclsRequest_v1,
    DescribeAclsRequest_v1,
)
from aiokafka.protocol.api import Request

from libs.contracts.acls import Grant
from libs.platform.kafka import KafkaAccess

# Kafka's enum codes (org.apache.kafka.common.resource / acl).
RESOURCE = {"topic": 2, "group": 3}
PATTERN = {"literal": 3, "prefixed": 4}
OPERATION = {"read": 3, "write": 4, "describe": 8}
ANY, ALLOW = 1, 3
RESOURCE_NAMES = {v: k for k, v in RESOURCE.items()}
PATTERN_NAMES = {v: k for k, v in PATTERN.items()}
OPERATION_NAMES = {v: k for k, v in OPERATION.items()}


class _CreateAcls(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 30

    def __init__(self, creations: list[tuple[Any, ...]]) -> None:
        self._creations = creations

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self._creations)


class _DescribeAcls(Request[DescribeAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 29

    def __init__(self, principal: str) -> None:
        self._principal = principal

    def build(self, request_struct_class: type[DescribeAclsRequest_v1]) -> DescribeAclsRequest_v1:
        return request_struct_class(ANY, None, ANY, self._principal, None, ANY, ANY)


class _DeleteAcls(Request[DeleteAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 31

    def __init__(self, filters: list[tuple[Any, ...]]) -> None:
        self._filters = filters

    def build(self, request_struct_class: type[DeleteAclsRequest_v1]) -> DeleteAclsRequest_v1:
        return request_struct_class(self._filters)


def kafka_principal(name: str, users: dict[str, str]) -> str:
    """``User:<name>`` unless the cluster knows the principal by another name (``--user``)."""
    return users.get(name, f"User:{name}")


def _binding(grant: Grant, users: dict[str, str]) -> tuple[Any, ...]:
    return (
        RESOURCE[grant.resource],
        grant.name,
        PATTERN[grant.pattern],
        kafka_principal(grant.principal, users),
        "*",
        OPERATION[grant.operation],
        ALLOW,
    )


@dataclass(frozen=True)
class AclChanges:
    created: list[Grant]
    deleted: list[tuple[Any, ...]]


def _raise_for(code: int, message: str | None, doing: str) -> None:
    if code:
        raise for_code(code)(f"{doing}: {message or ''}")


async def describe(admin: AIOKafkaAdminClient, principal: str) -> set[tuple[Any, ...]]:
    """Every ALLOW/DENY binding of one principal, as (resource, name, pattern, principal, host, op, permission)."""
    response = await admin._send_request(_DescribeAcls(principal))
    _raise_for(response.error_code, response.error_message, f"describing the ACLs of {principal}")
    return {
        (resource_type, name, pattern, acl[0], acl[1], acl[2], acl[3])
        for resource_type, name, pattern, acls in response.resources
        for acl in acls
    }


async def apply_acls(
    access: KafkaAccess,
    grants: Sequence[Grant],
    users: dict[str, str] | None = None,
    prune_prefix: str | None = None,
) -> AclChanges:
    """Create the bindings of ``grants`` that are missing (idempotent). With ``prune_prefix``, also
    delete the table's principals' bindings on resources named with that prefix that the table
    no longer has (the empty prefix prunes everything of theirs: a cluster of one environment)."""
    users = users or {}
    admin = access.admin(request_timeout_ms=15000)
    await admin.start()
    try:
        wanted = {_binding(g, users): g for g in grants}
        existing: set[tuple[Any, ...]] = set()
        for principal in sorted({kafka_principal(g.principal, users) for g in grants}):
            existing |= await describe(admin, principal)
        missing = [b for b in wanted if b not in existing]
        if missing:
            response = await admin._send_request(_CreateAcls(missing))
            for code, message in response.creation_responses:
                _raise_for(code, message, "creating ACLs")
        stale: list[tuple[Any, ...]] = []
        if prune_prefix is not None:
            stale = sorted(
                b for b in existing - set(wanted) if b[1].startswith(prune_prefix) and b[6] == ALLOW
            )
            if stale:
                response = await admin._send_request(_DeleteAcls(stale))
                for code, message, _ in response.filter_responses:
                    _raise_for(code, message, "deleting stale ACLs")
        return AclChanges(created=[wanted[b] for b in missing], deleted=stale)
    finally:
        await admin.close()


async def revoke_acls(
    access: KafkaAccess, grants: Iterable[Grant], users: dict[str, str] | None = None
) -> None:
    """Delete exactly these bindings (tests clean up their environment's grants)."""
    bindings = [_binding(g, users or {}) for g in grants]
    if not bindings:
        return
    admin = access.admin(request_timeout_ms=15000)
    await admin.start()
    try:
        response = await admin._send_request(_DeleteAcls(bindings))
        for code, message, _ in response.filter_responses:
            _raise_for(code, message, "deleting ACLs")
    finally:
        await admin.close()


def describe_binding(binding: tuple[Any, ...]) -> str:
    resource, name, pattern, principal, _, operation, _ = binding
    return (
        f"{principal} {OPERATION_NAMES.get(operation, operation)} "
        f"{RESOURCE_NAMES.get(resource, resource)} {name}{'*' if PATTERN_NAMES.get(pattern) == 'prefixed' else ''}"
    )
