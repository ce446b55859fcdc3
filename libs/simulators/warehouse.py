"""Warehouses and carriers: move each shipment through its pipeline's stages, as the public topics tell it.

Reads `fulfillment.stage-changes.v1`, waits a little, and answers on `fulfillment.updates.v1` with the
next stage (a carrier adds tracking when shipping). A small share of shipments fail at the
warehouse (`damaged`), which exercises re-sourcing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import orjson
import yaml

from libs.contracts import topics
from libs.contracts.envelope import utcnow
from libs.simulators.sender import ResilientSender


def pipeline_stages() -> dict[str, list[str]]:
    """Stage names per pipeline, from the fulfillment service's published configuration."""
    text = resources.files("services.fulfillment").joinpath("pipelines.yaml").read_text()
    return {p["name"]: [s["name"] for s in p["stages"]] for p in yaml.safe_load(text)["pipelines"]}


class WarehouseFloor:
    def __init__(
        self,
        sender: ResilientSender,
        topic_prefix: str,
        *,
        seed: str,
        step_s: tuple[float, float],
        failure_share: float = 0.02,
        stages: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """``stages``: stage names per pipeline (default: the packaged pipelines')."""
        self._sender = sender
        self._topic = topic_prefix + topics.FULFILLMENT_UPDATES
        self._rng = random.Random(seed)
        self._stages = {name: list(names) for name, names in (stages or pipeline_stages()).items()}
        self._step_s = step_s
        self._failure_share = failure_share
        self._tasks: set[asyncio.Task[None]] = set()

    def on_stage_event(self, event: dict[str, Any]) -> None:
        """Schedule the next move for a shipment that just entered a stage."""
        stage = event.get("entered_stage")
        if event.get("change") == "left" or stage is None:
            return
        stages = self._stages.get(event["pipeline"], [])
        if stage not in stages or stage == stages[-1]:
            return
        following = stages[stages.index(stage) + 1]
        if stage == stages[0] and self._rng.random() < self._failure_share:
            following = "failed"
        task = asyncio.create_task(self._move_later(event["shipment_id"], following))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _move_later(self, shipment_id: str, stage: str) -> None:
        await asyncio.sleep(self._rng.uniform(*self._step_s))
        update: dict[str, Any] = {
            "shipment_id": shipment_id,
            "update_id": f"{shipment_id}:{stage}",
            "stage": stage,
            "occurred_at": utcnow().isoformat(),
        }
        if stage == "shipped":
            update |= {"carrier": "DHL", "tracking_number": f"JJD{self._rng.randint(10**9, 10**10)}"}
        if stage == "failed":
            update["note"] = "damaged"
        await self._sender.send(self._topic, orjson.dumps(update), shipment_id)
