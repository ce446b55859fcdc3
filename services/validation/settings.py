"""Validation's settings: the platform's, plus the plugin rules in force. Its policy per channel
(countries shipped to, the hold threshold) is in the channels file, ``BATON_CHANNELS_FILE``."""

from __future__ import annotations

from pydantic import Field

from libs.platform.settings import BatonSettings


class ValidationSettings(BatonSettings):
    validation_rules: str = Field(
        default="",
        description="Comma-separated module:attribute paths of rules (libs.extensions.validation) to run "
        "besides the built-in ones and those of installed plugin packages",
    )
    validation_rules_disabled: str = Field(
        default="", description="Comma-separated names of installed plugin rules not to run"
    )

    @property
    def rule_paths(self) -> list[str]:
        return [p.strip() for p in self.validation_rules.split(",") if p.strip()]

    @property
    def disabled_rules(self) -> list[str]:
        return [n.strip() for n in self.validation_rules_disabled.split(",") if n.strip()]
