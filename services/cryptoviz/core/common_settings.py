"""The global flags of `cryptoviz` (before the command), shared by every component."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import SecretStr, field_validator, model_validator

from cryptoviz.core.quote import parse_clock_skew
from cryptoviz.core.settings import ServiceSettings, setting


class GlobalSettings(ServiceSettings):
    """Logging, the clock-skew bound every component validates times with, and the NATS login."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = setting("INFO", "Log level.")
    log_format: Literal["text", "json"] = setting(
        "text", "json for containers (one object per line), text for terminals."
    )
    max_clock_skew: str = setting(
        "300",
        "Seconds (or 90s, 5m; at most 1d) a quote's or candle's time may lie past its receive time and the"
        " clock of the scraper or ingester checking it; later ones are refused.",
        text=True,
    )
    nats_user: str | None = setting(None, "NATS user to log in as (scrape, backfill, ingest, notify).")
    nats_password: SecretStr | None = setting(None, "Its password (better NATS_PASSWORD_FILE; never logged).")
    nats_password_file: str | None = setting(None, "A file holding the NATS password (a mounted Secret).")
    nats_ca_file: str | None = setting(None, "CA bundle trusted for a tls:// NATS_URL.")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("max_clock_skew")
    @classmethod
    def _skew(cls, value: str) -> str:
        parse_clock_skew(value)
        return value

    @field_validator("nats_user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
            raise ValueError("letters, digits, - and _ only")
        return value

    @model_validator(mode="after")
    def _password_needs_user(self) -> GlobalSettings:
        if (self.nats_password or self.nats_password_file) and not self.nats_user:
            raise ValueError("a NATS password needs NATS_USER / --nats-user")
        return self
