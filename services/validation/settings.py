"""Validation's settings: the platform's (its policy per channel is in the channels file,
``BATON_CHANNELS_FILE``: countries shipped to and the hold threshold)."""

from __future__ import annotations

from libs.platform.settings import BatonSettings


class ValidationSettings(BatonSettings):
    pass
