"""`baton trace <order_id>`: an order's span tree from the JSON lines files the services write.

For people without a tracing backend: services started with ``BATON_TRACE_DIR`` (``make run`` sets
it to ``.cache/traces``) append their spans there; this reads them back and prints one tree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libs.platform.tracing import order_trace_id


@dataclass
class SpanNode:
    span: dict[str, Any]
    children: list[SpanNode] = field(default_factory=list)

    @property
    def start(self) -> int:
        return int(self.span["start_ns"])


def load_order_spans(trace_dir: Path, order_id: str) -> list[dict[str, Any]]:
    """Spans in the order's trace (its id is computed from the order id), plus spans tagged with the order id."""
    derived = order_trace_id(order_id)
    if derived is None:
        raise ValueError(f"{order_id!r} is not an order id (a UUID)")
    trace_id = f"{derived:032x}"
    spans: dict[str, dict[str, Any]] = {}
    for path in sorted(trace_dir.glob("*.jsonl")):
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if trace_id not in line and order_id not in line:
                    continue
                try:
                    span = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line being written right now
                if span["trace_id"] == trace_id or span["attributes"].get("baton.order_id") == order_id:
                    spans[span["span_id"]] = span
    return sorted(spans.values(), key=lambda s: s["start_ns"])


def build_tree(spans: list[dict[str, Any]]) -> list[SpanNode]:
    """Roots are spans whose parent is not among them (the order itself is the implicit root)."""
    nodes = {s["span_id"]: SpanNode(s) for s in spans}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = nodes.get(node.span["parent_id"] or "")
        (parent.children if parent is not None else roots).append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: n.start)
    return sorted(roots, key=lambda n: n.start)


def is_query(span: dict[str, Any]) -> bool:
    """A database call (from the asyncpg instrumentation)."""
    attributes = span["attributes"]
    return span.get("kind") == "CLIENT" and ("db.system.name" in attributes or "db.system" in attributes)


def _detail(span: dict[str, Any]) -> str:
    attributes = span["attributes"]
    if what := attributes.get("baton.event_type"):
        return str(what)
    if query := attributes.get("db.query.text") or attributes.get("db.statement"):
        return " ".join(str(query).split())[:70]
    if status := attributes.get("http.response.status_code") or attributes.get("http.status_code"):
        return f"HTTP {status}"
    return str(attributes.get("error.type") or "")


def render(order_id: str, spans: list[dict[str, Any]], queries: bool = False) -> str:
    """The span tree; database calls only with ``queries`` (there are several under most records)."""
    if not spans:
        return f"no spans for order {order_id}"
    origin = min(int(s["start_ns"]) for s in spans)
    services = sorted({s["service"] for s in spans})
    hidden = 0 if queries else sum(1 for s in spans if is_query(s))
    lines = [
        f"order {order_id}  trace {spans[0]['trace_id']}  {len(spans)} spans  services: {', '.join(services)}"
        + (f"  ({hidden} database calls hidden: --queries shows them)" if hidden else "")
    ]
    if hidden:
        spans = [s for s in spans if not is_query(s)]

    def walk(node: SpanNode, depth: int) -> None:
        span = node.span
        offset_ms = (node.start - origin) / 1e6
        took_ms = (int(span["end_ns"]) - node.start) / 1e6
        what = _detail(span)
        lines.append(
            f"{offset_ms:>10.1f} ms {took_ms:>8.1f} ms  {'  ' * depth}{span['service']:<20} "
            f"{span['name']}{'  [' + what + ']' if what else ''}"
        )
        for child in node.children:
            walk(child, depth + 1)

    for root in build_tree(spans):
        walk(root, 0)
    return "\n".join(lines)


def services_in(spans: list[dict[str, Any]]) -> set[str]:
    return {str(s["service"]).removeprefix("baton-") for s in spans}
