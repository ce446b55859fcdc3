"""The webhook sender behind the egress guard, on real sockets: internal receivers on loopback get
no request — not by an address in any spelling, not through a name that rebinds between two
lookups, not through a redirect — and failures are recorded as generic classes. `baton webhooks
check-url` is the same guard, as a command."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from libs.platform.secret_box import new_webhook_secret
from services.notification.adapters.egress import SystemResolver
from services.notification.adapters.webhooks import AiohttpWebhookSender
from services.notification.app.egress import EgressGuard
from services.notification.app.ports import Resolver
from services.notification.domain.egress import EgressPolicy, parse_networks
from services.notification.domain.webhooks import status_problem
from tests.support.infra import free_port
from tests.unit.fakes.notification import FakeResolver

pytestmark = pytest.mark.integration

INTERNAL, DECOY = "127.0.0.1", "127.0.0.2"
"""The internal receiver nothing may reach, and an allow-listed one (both loopback, one port)."""


@dataclass
class Receiver:
    """An HTTP endpoint on ``host``:``port`` that records every request; `/redirect?to=URL`
    answers 307 to URL, anything else 204 and closes the connection (each POST connects anew)."""

    host: str
    port: int
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.headers), await request.read()))
        if request.path == "/redirect":
            return web.Response(status=307, headers={"Location": request.query["to"]})
        return web.Response(status=204, headers={"Connection": "close"})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[Receiver, Receiver]]:
    """The internal receiver (127.0.0.1) and the allowed one (127.0.0.2), on the same port."""
    port = free_port()
    internal, decoy = Receiver(INTERNAL, port), Receiver(DECOY, port)
    try:
        await internal.start()
        await decoy.start()
        yield internal, decoy
    finally:
        await internal.stop()
        await decoy.stop()


@pytest.fixture
async def open_sender() -> AsyncIterator[list[AiohttpWebhookSender]]:
    """Senders a test opens are closed afterwards, also when it fails."""
    opened: list[AiohttpWebhookSender] = []
    yield opened
    for sender in opened:
        await sender.close()


async def sender_for(
    opened: list[AiohttpWebhookSender],
    allowed: str = "",
    resolver: Resolver | None = None,
    allow_http: bool = False,
    timeout_s: float = 5,
) -> AiohttpWebhookSender:
    policy = EgressPolicy(allowed=parse_networks(allowed), allow_http=allow_http)
    sender = AiohttpWebhookSender(timeout_s, EgressGuard(policy, resolver or SystemResolver(timeout_s)))
    await sender.open()
    opened.append(sender)
    return sender


SECRET = new_webhook_secret()


async def test_a_loopback_receiver_not_on_the_allow_list_gets_no_request_in_any_spelling(
    receivers: tuple[Receiver, Receiver], open_sender: list[AiohttpWebhookSender]
) -> None:
    internal, _ = receivers
    port = internal.port
    for allow_http in (False, True):
        sender = await sender_for(open_sender, allowed=f"{DECOY}/32", allow_http=allow_http)
        for url in (
            f"http://127.0.0.1:{port}/hook",
            f"https://127.0.0.1:{port}/hook",
            f"http://localhost:{port}/hook",  # the system resolver, /etc/hosts
            f"http://127.1:{port}/hook",
            f"http://2130706433:{port}/hook",
            f"http://0x7f000001:{port}/hook",
            f"http://0177.0.0.1:{port}/hook",
            f"http://[::ffff:127.0.0.1]:{port}/hook",
            f"http://evil@127.0.0.2:{port}/hook",
        ):
            sent = await sender.post(url, [SECRET], "msg_1", b"{}")
            assert (sent.status_code, sent.transport_error) == (None, "egress_refused"), url
    assert internal.requests == []


async def test_a_name_rebinding_to_the_internal_address_between_two_lookups_cannot_reach_it(
    receivers: tuple[Receiver, Receiver], open_sender: list[AiohttpWebhookSender]
) -> None:
    """The first answer is allowed, the second is 127.0.0.1: the connection goes to the address
    that was checked, and the next lookup is checked again."""
    internal, decoy = receivers
    resolver = FakeResolver({"rebind.test": [[DECOY], [INTERNAL]], "both.test": [[DECOY, INTERNAL]]})
    sender = await sender_for(open_sender, allowed=f"{DECOY}/32", resolver=resolver)
    url = f"http://rebind.test:{internal.port}/hook"

    first = await sender.post(url, [SECRET], "msg_1", b"{}")
    second = await sender.post(url, [SECRET], "msg_2", b"{}")
    mixed = await sender.post(f"http://both.test:{internal.port}/hook", [SECRET], "msg_3", b"{}")

    assert (first.status_code, first.transport_error) == (204, None)
    assert (second.status_code, second.transport_error) == (None, "egress_refused")
    assert (mixed.status_code, mixed.transport_error) == (None, "egress_refused")
    assert [path for path, _, _ in decoy.requests] == ["/hook"]
    assert internal.requests == []
    assert resolver.asked == ["rebind.test", "rebind.test", "both.test"], "one lookup per connection"
    assert decoy.requests[0][1]["Host"] == f"rebind.test:{internal.port}", "the name stays the Host"


async def test_a_redirect_is_never_followed_neither_inside_nor_to_an_allowed_place(
    receivers: tuple[Receiver, Receiver], open_sender: list[AiohttpWebhookSender]
) -> None:
    internal, decoy = receivers
    sender = await sender_for(open_sender, allowed=f"{DECOY}/32")
    to_internal = f"http://{INTERNAL}:{internal.port}/internal"
    to_allowed = f"http://{DECOY}:{decoy.port}/elsewhere"

    inside = await sender.post(
        f"http://{DECOY}:{decoy.port}/redirect?to={to_internal}", [SECRET], "msg_1", b'{"a":1}'
    )
    allowed = await sender.post(
        f"http://{DECOY}:{decoy.port}/redirect?to={to_allowed}", [SECRET], "msg_2", b'{"a":1}'
    )

    assert inside.status_code == allowed.status_code == 307
    assert status_problem(307) == "redirect"
    assert internal.requests == []
    assert [path for path, _, _ in decoy.requests] == ["/redirect", "/redirect"]


async def test_failures_are_generic_classes_without_addresses_ports_or_exception_text(
    receivers: tuple[Receiver, Receiver], open_sender: list[AiohttpWebhookSender]
) -> None:
    _, decoy = receivers
    accepted = []

    async def never_answer(_: object, writer: object) -> None:
        accepted.append(writer)

    import asyncio

    silent = await asyncio.start_server(never_answer, DECOY, 0)  # type: ignore[arg-type]
    silent_port = silent.sockets[0].getsockname()[1]
    try:
        sender = await sender_for(open_sender, allowed=f"{DECOY}/32", resolver=FakeResolver(), timeout_s=1.5)
        outcomes = {
            "refused": await sender.post(f"http://{DECOY}:{free_port()}/", [SECRET], "m1", b"{}"),
            "timeout": await sender.post(f"http://{DECOY}:{silent_port}/", [SECRET], "m2", b"{}"),
            "dns": await sender.post("https://nowhere.test/", [SECRET], "m3", b"{}"),
            "tls": await sender.post(f"https://{DECOY}:{decoy.port}/", [SECRET], "m4", b"{}"),
        }
    finally:
        for writer in accepted:
            writer.close()  # type: ignore[attr-defined]
        silent.close()
    assert {name: (o.status_code, o.transport_error) for name, o in outcomes.items()} == {
        name: (None, name) for name in outcomes
    }


def independent_signature(secret: str, headers: dict[str, str], body: bytes) -> str:
    """Standard Webhooks, written apart from Baton's code."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


async def test_an_allowed_receiver_gets_one_signature_per_secret_in_force(
    receivers: tuple[Receiver, Receiver], open_sender: list[AiohttpWebhookSender]
) -> None:
    _, decoy = receivers
    new, old = new_webhook_secret(), SECRET
    sender = await sender_for(open_sender, allowed=f"{DECOY}/32")

    sent = await sender.post(f"http://{DECOY}:{decoy.port}/hook", [new, old], "msg_9", b'{"x":1}')

    assert sent.status_code == 204
    [(_, headers, body)] = decoy.requests
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["webhook-signature"].split(" ") == [
        independent_signature(new, lowered, body),
        independent_signature(old, lowered, body),
    ]


def check_url(url: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in __import__("os").environ.items() if not k.startswith("BATON_WEBHOOK")}
    return subprocess.run(
        [sys.executable, "-m", "libs.cli.main", "webhooks", "check-url", url],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("url", "env", "code", "output"),
    [
        ("https://93.184.216.34/hook", {}, 0, "allowed"),
        ("https://[2606:4700:4700::1111]/hook", {}, 0, "allowed"),
        ("https://127.0.0.1/hook", {}, 1, "refused: loopback: "),
        ("https://0x7f000001/hook", {}, 1, "refused: loopback: "),
        ("https://localhost/hook", {}, 1, "refused: loopback: "),
        ("https://169.254.169.254/latest/meta-data", {}, 1, "refused: link_local: "),
        ("https://evil@93.184.216.34/", {}, 1, "refused: userinfo: "),
        ("http://93.184.216.34/hook", {}, 1, "refused: http_not_allowed: "),
        ("http://93.184.216.34/hook", {"BATON_WEBHOOK_ALLOW_HTTP": "true"}, 0, "allowed"),
        ("http://127.0.0.1:9/hook", {"BATON_WEBHOOK_ALLOWED_CIDRS": "127.0.0.1/32"}, 0, "allowed"),
        (
            "http://127.0.0.2:9/hook",
            {"BATON_WEBHOOK_ALLOWED_CIDRS": "127.0.0.1/32"},
            1,
            "refused: loopback: ",
        ),
        ("https://no-such-host.invalid/", {}, 1, "refused: dns: "),
    ],
)
def test_check_url_prints_allowed_or_refused_with_the_reason_and_exits_0_or_1(
    url: str, env: dict[str, str], code: int, output: str
) -> None:
    result = check_url(url, **env)
    assert result.returncode == code, result.stderr
    assert result.stdout.startswith(output), result.stdout


def test_check_url_with_an_invalid_setting_says_which_and_exits_2() -> None:
    result = check_url("https://93.184.216.34/", BATON_WEBHOOK_ALLOWED_CIDRS="10.0.0.0/8,nope")
    assert result.returncode == 2
    assert "webhook_allowed_cidrs" in result.stderr and "Traceback" not in result.stderr
