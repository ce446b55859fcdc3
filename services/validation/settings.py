"""Validation's settings: the platform's, plus its policy (`BATON_HOLD_THRESHOLD`, `BATON_SUPPORTED_COUNTRIES`)."""

from __future__ import annotations

from pydantic import Field

from libs.platform.settings import BatonSettings


class ValidationSettings(BatonSettings):
    hold_threshold: str = Field(
        default="1000", description="Order value above which a first-time customer is held"
    )
    supported_countries: str = Field(
        default="AT,BE,BG,CH,CY,CZ,DE,DK,EE,ES,FI,FR,GB,GR,HR,HU,IE,IT,LT,LU,LV,MT,NL,NO,PL,PT,RO,SE,SI,SK,US,CA",
        description="Comma-separated ISO-3166 alpha-2 codes of destinations Baton accepts orders for",
    )
