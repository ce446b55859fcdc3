"""Baton as it is deployed: the built wheel, installed in a fresh virtualenv outside the repository,
run as a non-root user in a read-only working directory, each service with exactly the environment
`deploy/k8s` gives its Deployment, on the secured broker (SASL_SSL, one principal per service,
deny-by-default ACLs) and PostgreSQL with one role per service created by `baton migrate` as the
migrate Job does. One order goes from submission to `delivered`; the customer gets an e-mail, a
signed webhook is delivered, and the status API answers on a non-loopback address.

What is not the manifests' is said here: values naming cluster resources (the broker's address, the
CA file's path, the mail relay, the OTLP collector, Secrets) become this machine's, and each process
gets its own ops port because here they share one host (in Kubernetes each pod has its own).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from libs.contracts import topics
from libs.contracts.topics import SERVICES
from libs.platform import dsn
from libs.platform.kafka import apply_topics
from libs.platform.secret_box import new_key
from libs.platform.settings import BatonSettings
from tests.support.infra import Infra, free_port, fresh_name, start_infra, start_secure_infra, stop_infra
from tests.support.kafka_io import Publisher, TopicWatcher
from tests.support.mail import MailBox
from tests.support.manifests import container_env, localised, of_kind, rendered_base
from tests.support.orders import adjustment, location, order, product, stage_update

pytestmark = [pytest.mark.prod, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
RUN_AS = "baton-prod"
"""The unprivileged user the services run as (created once, like PostgreSQL's `baton-pg`)."""


@dataclass
class Installed:
    """Baton from its wheel, in a virtualenv outside the repository."""

    root: Path
    venv: Path
    workdir: Path
    """Read-only for the services' user: nothing may be written where they start."""

    @property
    def baton(self) -> str:
        return str(self.venv / "bin" / "baton")


def _user() -> tuple[int, int] | None:
    """The services' user (created when we are root); None when not root: run as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(RUN_AS)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", RUN_AS], check=True)
        entry = pwd.getpwnam(RUN_AS)
    return entry.pw_uid, entry.pw_gid


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = Path(tempfile_dir())
    try:
        dist = root / "dist"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                "-w",
                str(dist),
                str(REPO),
            ],
            check=True,
            cwd=root,
        )
        [wheel] = dist.glob("baton-*.whl")
        venv = root / "venv"
        subprocess.run([deployed_python(), "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        lock = REPO / "requirements" / "runtime.lock"
        subprocess.run([*pip, "--require-hashes", "--no-deps", "-r", str(lock)], check=True, cwd=root)
        subprocess.run([*pip, "--no-deps", str(wheel)], check=True, cwd=root)
        workdir = root / "work"
        workdir.mkdir()
        for path in (root, venv, workdir):
            path.chmod(0o755)
        workdir.chmod(0o555)  # nobody writes where the services start
        yield Installed(root, venv, workdir)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def deployed_python() -> str:
    """The operating system's Python 3 (what the image installs Baton into) when it is a 3.11+
    with venv; else this interpreter. (A Python under root's home could not run as another user.)"""
    system = "/usr/bin/python3"
    if os.path.exists(system):
        ok = subprocess.run(
            [system, "-c", "import sys, venv, ensurepip; assert sys.version_info >= (3, 11)"],
            capture_output=True,
        )
        if ok.returncode == 0:
            return system
    return sys.executable


def tempfile_dir() -> str:
    """A fresh folder outside the repository that the services' user may read."""
    import tempfile

    path = tempfile.mkdtemp(prefix="baton-prod-")
    Path(path).chmod(0o755)
    return path


@dataclass
class Receiver:
    """The webhook endpoint: keeps each request."""

    port: int = field(default_factory=free_port)
    received: list[dict[str, Any]] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            self.received.append({"headers": dict(request.headers), "body": await request.read()})
            return web.Response(status=204)

        app = web.Application()
        app.add_routes([web.post("/hook", handle)])
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def collector() -> tuple[web.AppRunner, int]:
    """An OTLP/HTTP endpoint that accepts spans (the manifests export traces to a collector)."""

    async def accept(_: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.add_routes([web.post("/v1/traces", accept), web.post("/v1/metrics", accept)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def host_address() -> str:
    """This machine's address on its network (not loopback): where the status API must answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this picks the outgoing interface
        address = str(probe.getsockname()[0])
    assert not address.startswith("127."), "this machine has no non-loopback address"
    return address


@dataclass
class Deployment:
    """What the production profile runs on: the secured broker, a fresh database and its roles."""

    plain: Infra
    secure: Infra
    database: str
    role_urls: dict[str, str]
    """Schema (and "migrator", "operator") -> URL with the role's password, like the Secrets."""
    ca_file: Path
    webhook_key: str = field(default_factory=new_key)
    """The Secret baton-webhook-secrets (from `baton webhooks new-key`)."""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: Path = Path()


@pytest.fixture(scope="module")
async def deployment(installed: Installed) -> AsyncIterator[Deployment]:
    plain = start_infra()
    secure = await asyncio.to_thread(start_secure_infra, plain)
    assert secure.secured is not None
    database = fresh_name("prod")
    urls: dict[str, str] = {"migrator": plain.database_url(database)}
    for name in (*SERVICES, "operator"):
        password = secrets.token_urlsafe(24)
        login = f"{database}_{name}"
        urls[name] = dsn.with_login(plain.database_url(database), login, password)
    ca = installed.root / "kafka-ca.pem"  # the Secret baton-kafka-ca, as a file the services may read
    shutil.copyfile(secure.secured.ca_file, ca)
    ca.chmod(0o644)
    logs = installed.root / "logs"
    logs.mkdir()
    logs.chmod(0o777)
    deployment = Deployment(plain, secure, database, urls, ca, logs=logs)
    try:
        # The topics Job's work (as the admin): topics exist, ACLs applied (unprefixed, as deployed).
        settings = BatonSettings(
            kafka_bootstrap_servers=secure.bootstrap_servers, kafka_security=secure.security
        )
        await apply_topics(settings)
        yield deployment
    finally:
        for process in deployment.processes.values():
            process.terminate()
        for process in deployment.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
            if process.poll() is None:
                process.kill()
        await drop_database(plain, database, [dsn.user_name(urls[n]) or "" for n in (*SERVICES, "operator")])
        stop_infra(secure)
        stop_infra(plain)


async def drop_database(infra: Infra, database: str, roles: list[str]) -> None:
    from libs.platform.db import quote_ident

    conn = await asyncpg.connect(infra.server_dsn)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database
        )
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)}")
        for role in roles:
            await conn.execute(f"DROP ROLE IF EXISTS {quote_ident(role)}")
    finally:
        await conn.close()


def secrets_of(deployment: Deployment) -> dict[tuple[str, str], str]:
    """The Secrets the manifests name, with this run's values."""
    assert deployment.secure.secured is not None
    broker = deployment.secure.secured
    values: dict[tuple[str, str], str] = {("baton-db-migrator", "url"): deployment.role_urls["migrator"]}
    for name in (*SERVICES, "operator"):
        values[(f"baton-db-{name}", "url")] = deployment.role_urls[name]
    for principal in (*SERVICES, "admin"):
        values[(f"baton-kafka-{principal}", "username")] = principal
        values[(f"baton-kafka-{principal}", "password")] = broker.password(principal)
    values[("baton-kafka-ca", "ca.pem")] = deployment.ca_file.read_text()
    values[("baton-webhook-secrets", "key")] = deployment.webhook_key
    return values


def manifest_env(
    objects: list[dict[str, Any]],
    kind: str,
    name: str,
    container: str,
    deployment: Deployment,
    here: dict[str, str],
) -> dict[str, str]:
    """Exactly the variables the manifest gives that container, localised; nothing of ours."""
    workload = of_kind(objects, kind)[name]
    spec = workload["spec"]["template"]["spec"]
    [found] = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == container]
    values = secrets_of(deployment)
    env = container_env(objects, found, lambda s, k: values[(s, k)], pod_name=f"{name}-prod")
    return localised(env, here)


def run(
    installed: Installed, args: list[str], env: dict[str, str], name: str, deployment: Deployment
) -> subprocess.Popen[bytes]:
    """A Baton command from the installed wheel, as the services' user, in the read-only folder,
    with only ``env`` (and a PATH): no variable of this test process leaks in."""
    user = _user()
    log = (deployment.logs / f"{name}.log").open("ab")
    return subprocess.Popen(
        [installed.baton, *args],
        env=env | {"PATH": "/usr/bin:/bin", "HOME": str(installed.workdir)},
        cwd=installed.workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        user=user[0] if user else None,
        group=user[1] if user else None,
    )


def signature_is_valid(request: dict[str, Any], secret: str) -> bool:
    """Standard Webhooks, checked independently of Baton's code."""
    headers = {k.lower(): v for k, v in request["headers"].items()}
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + request["body"]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, candidate) for candidate in headers["webhook-signature"].split())


async def wait_until(check: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.5)


async def test_the_installed_wheel_runs_the_fleet_as_deployed_and_delivers_an_order(
    installed: Installed, deployment: Deployment
) -> None:
    objects = rendered_base()
    mailbox = MailBox()
    receiver = Receiver()
    otlp, otlp_port = await collector()
    mailbox.start()
    await receiver.start()
    here = {
        "KAFKA_BOOTSTRAP_SERVERS": deployment.secure.bootstrap_servers,
        "KAFKA_SSL_CAFILE": str(deployment.ca_file),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        "BATON_SMTP_HOST": "127.0.0.1",
        "BATON_SMTP_PORT": str(mailbox.port),
    }
    publisher = Publisher(deployment.secure.kafka, "")
    status = TopicWatcher(deployment.secure.kafka, topics.ORDERS_STATUS)
    try:
        # The migrate Job: the migrator creates the database, the schemas and each service's role.
        migrate_env = manifest_env(objects, "Job", "baton-migrate", "migrate", deployment, here)
        migrate = run(installed, ["migrate"], migrate_env, "migrate", deployment)
        assert await asyncio.to_thread(migrate.wait, 300) == 0, (deployment.logs / "migrate.log").read_text()
        # The topics Job: topics and ACLs, as the Kafka admin.
        for step, container in (("topics", "topics"), ("acls", "acls")):
            env = manifest_env(objects, "Job", "baton-topics", container, deployment, here)
            job = run(installed, [step, "apply"], env, step, deployment)
            assert await asyncio.to_thread(job.wait, 120) == 0, (deployment.logs / f"{step}.log").read_text()

        ops_ports = {}
        for service in SERVICES:
            env = manifest_env(objects, "Deployment", service, service, deployment, here)
            assert env["KAFKA_SASL_USERNAME"] == service and env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
            ops_ports[service] = free_port()
            env["BATON_OPS_PORT"] = str(ops_ports[service])  # one host here; one pod each in Kubernetes
            if service == "notification":
                # The one site-specific addition: this test's webhook receiver listens on loopback,
                # which the egress guard refuses unless the site allows it (as a site with an
                # internal receiver would allow its own range).
                env["BATON_WEBHOOK_ALLOWED_CIDRS"] = "127.0.0.1/32"
            deployment.processes[service] = run(installed, ["run", service], env, service, deployment)

        async with aiohttp.ClientSession() as http:

            async def all_ready() -> bool:
                for service, port in ops_ports.items():
                    assert deployment.processes[service].poll() is None, (
                        deployment.logs / f"{service}.log"
                    ).read_text()[-3000:]
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                            if response.status != 200:
                                return False
                            continue
                    return False
                return True

            await wait_until(all_ready, "every service ready", timeout=240)

            # An operator subscribes a webhook through the installed CLI, as the operator principal.
            operator = localised(
                {
                    "KAFKA_BOOTSTRAP_SERVERS": "",
                    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                    "KAFKA_SSL_CAFILE": "",
                },
                here,
            ) | {
                "KAFKA_SASL_USERNAME": "operator",
                "KAFKA_SASL_PASSWORD": deployment.secure.secured.password("operator"),  # type: ignore[union-attr]
                "DATABASE_URL": deployment.role_urls["operator"],
            }
            operator["BATON_WEBHOOK_SECRETS_KEY"] = deployment.webhook_key  # the operators' copy of the key
            subscription = f"prod-{secrets.token_hex(3)}"
            added = subprocess.run(
                [
                    installed.baton,
                    "webhooks",
                    "add",
                    "--url",
                    f"http://127.0.0.1:{receiver.port}/hook",
                    "--events",
                    "order.delivered",
                    "--subscription-id",
                    subscription,
                ],
                env=operator | {"PATH": "/usr/bin:/bin"},
                cwd=installed.workdir,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert added.returncode == 0, added.stderr
            printed_id, secret = added.stdout.split()
            assert printed_id == subscription and secret.startswith("whsec_")
            assert secret not in added.stderr, "the secret is shown once, on stdout"

            await publisher.start()
            await status.start()
            item = f"PROD-{secrets.token_hex(3)}"
            wh = f"wh-{item}"
            await publisher.send(topics.CATALOG_PRODUCTS, item, product(item))
            await publisher.send(topics.INVENTORY_LOCATIONS, wh, location(wh))
            await publisher.send(
                topics.INVENTORY_ADJUSTMENTS, item, adjustment(f"i-{item}", item, wh, delta=3)
            )
            external_id = f"prod-{secrets.token_hex(4)}"

            async def seeded() -> bool:
                conn = await asyncpg.connect(deployment.role_urls["migrator"])
                try:
                    return bool(
                        await conn.fetchval(
                            "SELECT EXISTS (SELECT 1 FROM validation.products WHERE sku = $1)"
                            " AND EXISTS (SELECT 1 FROM allocation.adjustments WHERE sku = $1)",
                            item,
                        )
                    )
                finally:
                    await conn.close()

            await wait_until(seeded, "the catalog and stock applied")

            async def reached(state: str) -> dict[str, Any] | None:
                found = [
                    r for r in status.records if r.get("external_id") == external_id and r["status"] == state
                ]
                return found[-1] if found else None

            await publisher.send(
                topics.ORDERS_SUBMITTED,
                f"webshop:{external_id}",
                order(external_id, lines=[(item, 1, "10.00")]),
            )
            in_fulfillment = await wait_until(lambda: reached("in_fulfillment"), "the order in fulfillment")
            order_id = in_fulfillment["order_id"]
            shipment_id = in_fulfillment["shipments"][0]["shipment_id"]
            for stage in ("picking", "packed", "shipped", "delivered"):
                await publisher.send(
                    topics.FULFILLMENT_UPDATES,
                    shipment_id,
                    stage_update(shipment_id, stage, tracking_number="PRD1"),
                )
            await wait_until(lambda: reached("delivered"), "the order delivered")

            async def mail_arrived() -> bool:
                return any(external_id in str(m["Subject"]) for m in mailbox.messages)

            await wait_until(mail_arrived, "a customer e-mail")

            async def hook_arrived() -> list[dict[str, Any]]:
                return [
                    r
                    for r in receiver.received
                    if orjson.loads(r["body"])["data"].get("order_id") == order_id
                ]

            [delivery] = await wait_until(hook_arrived, "the signed webhook")
            assert signature_is_valid(delivery, secret)

            keyed = subprocess.run(
                [installed.baton, "api-keys", "add", "--all", "--name", "prod-profile"],
                env=operator | {"PATH": "/usr/bin:/bin"},
                cwd=installed.workdir,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert keyed.returncode == 0, keyed.stderr
            printed = dict(line.split(": ", 1) for line in keyed.stdout.splitlines() if ": " in line)
            api_key = printed["key"]
            assert api_key not in keyed.stderr, "the key is shown once, on stdout"
            address = host_address()

            async def api_answers() -> dict[str, Any] | None:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(
                        f"http://{address}:8085/orders/{order_id}",
                        headers={"Authorization": f"Bearer {api_key}"},
                    ) as response:
                        if response.status == 200:
                            return dict(await response.json())
                return None

            view = await wait_until(api_answers, f"the status API on {address}")
            assert view["status"] == "delivered"
        for service, process in deployment.processes.items():
            assert process.poll() is None, (
                f"{service} exited: {(deployment.logs / f'{service}.log').read_text()[-2000:]}"
            )
        user = _user()
        if user is not None:
            owners = {
                service: os.stat(f"/proc/{process.pid}").st_uid
                for service, process in deployment.processes.items()
            }
            assert set(owners.values()) == {user[0]}, owners
        written = list(installed.workdir.iterdir())
        assert written == [], f"the services wrote into their read-only folder: {written}"
    finally:
        await status.stop()
        await publisher.stop()
        await receiver.stop()
        await otlp.cleanup()
        mailbox.stop()
