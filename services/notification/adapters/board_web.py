"""The fulfillment board: server-rendered HTML (Jinja2), made live with htmx and Server-Sent Events.

Pages (all under ``/board``): the board of one pipeline, an order, held orders, dead webhook
deliveries, the search by channel + external id. The browser logs in with a status API key, kept in
an HttpOnly, SameSite=Strict cookie; every action is a POST that must come from the board's own
origin and is refused to a `viewer` key. Actions publish public commands (``app/board.py``).

Live: each notification process LISTENs for the read model's NOTIFY (``board_store.ChangeFeed``)
and tells open boards over SSE that something changed; the board then fetches its columns again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import jinja2
import yaml
from aiohttp import web
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from libs.contracts.orders import ShipmentLine
from libs.contracts.privacy import redact_text
from libs.platform.dead_letters import DeadLetter
from services.notification.app.board import (
    ActionRefused,
    BoardReads,
    OperatorAction,
    OperatorActions,
    cancel_order,
    decide_hold,
    move_shipment,
    redeliver_webhook,
)
from services.notification.app.ports import OrderStatusQueries
from services.notification.domain.api_keys import ApiKey, digest
from services.notification.domain.board import Pipeline, age, columns, pipelines_of

COOKIE = "baton_board_key"
STATIC_PREFIX = "/board/static"
OPEN_BOARD_PATHS = frozenset({"/board/login"})
KEEP_ALIVE_S = 15.0
DEAD_LETTERS_TIMEOUT_S = 15.0
DEAD_LETTERS_SHOWN = 200
log = logging.getLogger("baton.notification.board")
COALESCE_S = 0.25
API_KEY: web.RequestKey[ApiKey] = web.RequestKey("api_key", ApiKey)


def static_dir() -> Path:
    """The board's CSS (in the repository) and vendored htmx (copied from npm by `make install`)."""
    return Path(str(resources.files("services.notification").joinpath("static")))


class Changes(Protocol):
    """Signals that the read model changed (``board_store.ChangeFeed``): a queue per open board."""

    def subscribe(self) -> asyncio.Queue[str]: ...

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None: ...


def load_pipelines(path: Path | None) -> tuple[Pipeline, ...]:
    """The pipelines fulfillment runs with: its packaged file, or the operator's
    (``BATON_PIPELINES_FILE``, the same file fulfillment reads); read as data, never imported."""
    if path is not None:
        text = path.read_text()
    else:
        text = resources.files("services.fulfillment").joinpath("pipelines.yaml").read_text()
    return pipelines_of(yaml.safe_load(text))


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("services.notification", "templates/board"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)
    return env


class Board:
    """The board's routes; ``key_of`` is the status API's authentication (header or cookie)."""

    def __init__(
        self,
        pipelines: tuple[Pipeline, ...],
        queries: BoardReads,
        orders: OrderStatusQueries,
        actions: OperatorActions,
        feed: Changes,
        dead_letters: Callable[[], Awaitable[Sequence[DeadLetter]]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pipelines = pipelines
        self._by_name = {p.name: p for p in pipelines}
        self._queries = queries
        self._orders = orders
        self._actions = actions
        self._feed = feed
        self._dead_letters = dead_letters
        self._clock = clock
        self._env = _templates()
        self._closing = asyncio.Event()

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/board/login", self.login_page),
            web.post("/board/login", self.login),
            web.post("/board/logout", self.logout),
            web.get("/board", self.board),
            web.get("/board/columns", self.columns),
            web.get("/board/events", self.events),
            web.get("/board/orders", self.search),
            web.get("/board/orders/{order_id}", self.order),
            web.get("/board/held", self.held),
            web.get("/board/dead-letters", self.dead_letters),
            web.post("/board/shipments/{shipment_id}/move", self.move),
            web.post("/board/orders/{order_id}/hold", self.hold),
            web.post("/board/orders/{order_id}/cancel", self.cancel),
            web.post("/board/deliveries/{delivery_id}/redeliver", self.redeliver),
            web.static(STATIC_PREFIX, static_dir()),
        ]

    async def on_shutdown(self, _: web.Application) -> None:
        """Open event streams end at once, so the server stops without waiting for them."""
        self._closing.set()

    # Pages

    def _page(self, name: str, key: ApiKey | None, status: int = 200, **values: Any) -> web.Response:
        html = self._env.get_template(name).render(key=key, pipelines=self._pipelines, **values)
        return web.Response(text=html, status=status, content_type="text/html")

    async def login_page(self, request: web.Request) -> web.Response:
        return self._page("login.html", None, error=None)

    async def login(self, request: web.Request) -> web.Response:
        """A wrong key is answered 401 and counts as a failed log-in of the address (``http_api``)."""
        form = await request.post()
        token = str(form.get("key", "")).strip()
        key = await self._orders.api_key(digest(token)) if token else None
        if key is None:
            return self._page("login.html", None, status=401, error="That key is unknown or revoked.")
        response = web.HTTPSeeOther("/board")
        response.set_cookie(
            COOKIE, token, httponly=True, samesite="Strict", path="/board", secure=request.secure
        )
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        response = web.HTTPSeeOther("/board/login")
        response.del_cookie(COOKIE, path="/board")
        raise response

    def _pipeline(self, request: web.Request) -> Pipeline:
        name = request.query.get("pipeline", self._pipelines[0].name)
        if name not in self._by_name:
            raise web.HTTPNotFound(text=f"no pipeline {name!r}")
        return self._by_name[name]

    async def _columns(self, key: ApiKey, pipeline: Pipeline) -> list[tuple[str, list[dict[str, Any]]]]:
        now = self._clock()
        last = pipeline.stages[-1] if pipeline.stages else None
        cards = [c for c in await self._queries.cards(pipeline.name, last) if key.may_read(c.channel)]
        return [
            (
                stage,
                [
                    {
                        "card": c,
                        "age": age(c.since, now),
                        "later": pipeline.later_stages(c.stage),
                        "sla": pipeline.sla(c.stage, c.since, now),
                    }
                    for c in found
                ],
            )
            for stage, found in columns(pipeline, cards)
        ]

    async def _counts(self, key: ApiKey) -> dict[str, int | None]:
        held, _ = await self._queries.held(None if key.reads_all else key.channels)
        dead = (await self._queries.dead_deliveries())[0] if key.reads_all else None
        return {"held": held, "dead": dead}

    async def board(self, request: web.Request) -> web.Response:
        key = request[API_KEY]
        pipeline = self._pipeline(request)
        return self._page(
            "board.html",
            key,
            pipeline=pipeline,
            columns=await self._columns(key, pipeline),
            counts=await self._counts(key),
        )

    async def columns(self, request: web.Request) -> web.Response:
        key = request[API_KEY]
        pipeline = self._pipeline(request)
        return self._page("columns.html", key, pipeline=pipeline, columns=await self._columns(key, pipeline))

    async def events(self, request: web.Request) -> web.StreamResponse:
        """`changed` whenever the read model changed (no order data: the board fetches what it may see)."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue = self._feed.subscribe()
        closing = asyncio.create_task(self._closing.wait())
        try:
            # A change between the page's rendering and this stream (or during a reconnect) is not
            # lost: every new stream starts with one refresh.
            await response.write(b"event: changed\ndata: 1\n\n")
            while not self._closing.is_set():
                got = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait(
                    {got, closing}, timeout=KEEP_ALIVE_S, return_when="FIRST_COMPLETED"
                )
                if got in done:
                    while not queue.empty():  # a burst of changes is one refresh
                        queue.get_nowait()
                    await response.write(b"event: changed\ndata: 1\n\n")
                    # Changes in the next moment make one more refresh, not one each.
                    await asyncio.wait({closing}, timeout=COALESCE_S)
                else:
                    got.cancel()
                    await response.write(b": keep-alive\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            closing.cancel()
            self._feed.unsubscribe(queue)
        return response

    async def order(self, request: web.Request) -> web.Response:
        key: ApiKey = request[API_KEY]
        try:
            order_id = UUID(request.match_info["order_id"])
        except ValueError:
            return self._page("missing.html", key, status=404, what="That is not an order id.")
        view = await self._orders.order(order_id)
        if view is None or not key.may_read(view["channel"]):
            return self._page("missing.html", key, status=404, what=f"No order {order_id}.")
        activity = await self._queries.order_activity(order_id)
        return self._page(
            "order.html",
            key,
            order=view,
            timeline=_timeline(view, activity),
            counts=await self._counts(key),
            later={
                s["shipment_id"]: self._by_name[s["pipeline"]].later_stages(s.get("stage"))
                for s in view["shipments"]
                if s.get("pipeline") in self._by_name
            },
        )

    async def search(self, request: web.Request) -> web.Response:
        key: ApiKey = request[API_KEY]
        channel = request.query.get("channel", "").strip()
        external_id = request.query.get("external_id", "").strip()
        if not channel or not external_id:
            return self._page("missing.html", key, status=400, what="Give a channel and an external id.")
        order_id = await self._orders.find(channel, external_id) if key.may_read(channel) else None
        if order_id is None:
            return self._page("missing.html", key, status=404, what=f"No order {external_id} on {channel}.")
        raise web.HTTPSeeOther(f"/board/orders/{order_id}")

    async def held(self, request: web.Request) -> web.Response:
        key: ApiKey = request[API_KEY]
        total, rows = await self._queries.held(None if key.reads_all else key.channels)
        return self._page("held.html", key, total=total, orders=rows, counts=await self._counts(key))

    async def dead_letters(self, request: web.Request) -> web.Response:
        key: ApiKey = request[API_KEY]
        if not key.reads_all:
            return self._page(
                "missing.html", key, status=403, what="Dead webhook deliveries need a key for every channel."
            )
        total, rows = await self._queries.dead_deliveries()
        letters: Sequence[DeadLetter] | None = None
        if self._dead_letters is not None:
            try:
                letters = await asyncio.wait_for(self._dead_letters(), DEAD_LETTERS_TIMEOUT_S)
            except (TimeoutError, KafkaError, OSError) as exc:
                log.warning("dead-letter topics unreadable", extra={"error": type(exc).__name__})
        per_service = Counter(d.service for d in letters or ())
        return self._page(
            "dead_letters.html",
            key,
            total=total,
            deliveries=rows,
            letters=[_shown(d) for d in list(reversed(letters or []))[:DEAD_LETTERS_SHOWN]],
            letters_total=None if letters is None else len(letters),
            per_service=sorted(per_service.items()),
            counts=await self._counts(key),
        )

    # Actions: each answers with a short message fragment for the page's live region.

    async def _act(self, request: web.Request, act: Callable[[ApiKey], Any]) -> web.Response:
        key: ApiKey = request[API_KEY]
        try:
            done: OperatorAction = await act(key)
        except ActionRefused as refused:
            return self._page("flash.html", key, status=refused.status, ok=False, message=str(refused))
        return self._page("flash.html", key, status=202, ok=True, message=_said(done))

    async def move(self, request: web.Request) -> web.Response:
        form = await request.post()
        shipment_id = request.match_info["shipment_id"]
        target = str(form.get("stage", ""))
        return await self._act(
            request,
            lambda key: move_shipment(
                key, shipment_id, target, self._by_name, self._queries, self._actions, self._clock()
            ),
        )

    async def hold(self, request: web.Request) -> web.Response:
        form = await request.post()
        order_id = _order_id(request)
        decision = str(form.get("decision", ""))
        if decision not in ("release", "reject"):
            raise web.HTTPBadRequest(text="decision must be release or reject")
        reason = str(form.get("reason", ""))[:2000]
        return await self._act(
            request,
            lambda key: decide_hold(
                key,
                order_id,
                "release" if decision == "release" else "reject",
                reason,
                self._queries,
                self._actions,
            ),
        )

    async def cancel(self, request: web.Request) -> web.Response:
        """The whole order (``scope=order``), or the units given per SKU as `qty:<sku>` fields."""
        form = await request.post()
        order_id = _order_id(request)
        units: dict[str, int] = {}
        if form.get("scope") == "lines":
            try:
                for name, value in form.items():
                    if name.startswith("qty:") and str(value).strip() not in ("", "0"):
                        units[name.removeprefix("qty:")] = units.get(name.removeprefix("qty:"), 0) + int(
                            str(value)
                        )
                lines = [ShipmentLine(sku=sku, quantity=quantity) for sku, quantity in units.items()]
            except (ValueError, ValidationError):
                return self._page(
                    "flash.html",
                    request[API_KEY],
                    status=400,
                    ok=False,
                    message="Units must be whole numbers above 0.",
                )
            if not lines:
                return self._page(
                    "flash.html",
                    request[API_KEY],
                    status=400,
                    ok=False,
                    message="Choose at least one unit to cancel.",
                )
        else:
            lines = []
        reason = str(form.get("reason", ""))[:2000]
        return await self._act(
            request,
            lambda key: cancel_order(key, order_id, lines or None, reason, self._queries, self._actions),
        )

    async def redeliver(self, request: web.Request) -> web.Response:
        delivery_id = request.match_info["delivery_id"]
        return await self._act(request, lambda key: redeliver_webhook(key, delivery_id, self._actions))


def _shown(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as the list shows it: its error with personal data masked, as `baton dlq list`
    does (the body is not shown at all)."""
    where = (
        letter.source
        if "dlq-source-topic" in letter.headers
        else f"webhook delivery {letter.headers.get('dlq-delivery-id', '')}"
    )
    error = redact_text(letter.headers.get("dlq-error", ""), letter.value)[:300]
    return {
        "at": letter.at,
        "service": letter.service,
        "cause": letter.cause,
        "source": where,
        "error": error,
    }


def _order_id(request: web.Request) -> UUID:
    try:
        return UUID(request.match_info["order_id"])
    except ValueError:
        raise web.HTTPNotFound(text="not an order id") from None


def _said(done: OperatorAction) -> str:
    what = {
        "move": f"Shipment {done.subject}: moved to {getattr(done.command, 'stage', '')}",
        "release": f"Order {done.subject}: released",
        "reject": f"Order {done.subject}: rejected",
        "cancel": f"Order {done.subject}: cancellation requested",
        "redeliver": f"Delivery {done.subject}: redelivery requested",
    }[done.action]
    return f"{what} (sent as a command; the board follows when it is applied)."


def _timeline(view: Mapping[str, Any], activity: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every status version, stage change, webhook attempt, e-mail and board action, oldest first."""
    rows: list[dict[str, Any]] = []
    for entry in view["timeline"]:
        event = entry["event"]
        if entry["kind"] == "status":
            what = f"status {event['status']} (version {event['version']})"
        else:
            moved = f"{event.get('left_stage') or '—'} → {event.get('entered_stage') or '—'}"
            what = f"shipment {event['shipment_id']} {event['change']} {moved} ({event['pipeline']})"
        rows.append({"at": datetime.fromisoformat(entry["occurred_at"]), "kind": entry["kind"], "what": what})
    for hook in activity["webhooks"]:
        if hook["attempt"] is None:
            continue
        result = f"HTTP {hook['status_code']}" if hook["status_code"] else ""
        result = f"{result} {hook['error'] or ''}".strip() or "sent"
        rows.append(
            {
                "at": hook["attempted_at"],
                "kind": "webhook",
                "what": f"{hook['event_key']} to {hook['subscription_id']}, attempt {hook['attempt']}: {result}"
                f" (now {hook['status']})",
            }
        )
    for mail in activity["emails"]:
        detail = f", last error: {mail['last_error']}" if mail["last_error"] else ""
        rows.append(
            {
                "at": mail["sent_at"],
                "kind": "e-mail",
                "what": f"e-mail for {mail['status']}: {mail['state']} after {mail['attempts']} attempt(s){detail}",
            }
        )
    for action in activity["actions"]:
        who = f"{action['key_name']} ({action['key_id']})" if action["key_name"] else action["key_id"]
        rows.append(
            {"at": action["at"], "kind": "action", "what": f"{action['action']} {action['subject']} by {who}"}
        )
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(rows, key=lambda r: r["at"] or far)


__all__ = ["API_KEY", "COOKIE", "OPEN_BOARD_PATHS", "STATIC_PREFIX", "Board", "static_dir"]
