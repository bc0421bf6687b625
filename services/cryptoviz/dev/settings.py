"""The settings of `cryptoviz dev`, declared once (core/settings.py makes the flags, env vars and the table
in docs/dev.md from them). The children get theirs as env vars from the supervisor."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import DirectoryPath, model_validator

from cryptoviz.core.providers import ProviderName
from cryptoviz.core.settings import ServiceSettings, setting
from cryptoviz.scraper.settings import MIN_INTERVAL_LIVE, MIN_INTERVAL_LOCAL  # the scraper's own floors

REPLAY_CANDLE_SECONDS = 300
"""The shared CSVs hold 5-minute candles: at --speed S one is replayed every 300/S seconds."""
DEMO_INTERVAL = 5.0
LIVE_INTERVAL = 60.0
DEFAULT_STATE = Path(".cryptoviz")


class DevSettings(ServiceSettings):
    """`cryptoviz dev`: the whole pipeline on this machine."""

    demo: bool = setting(False, "Run the offline market simulator (provider demo, labelled simulated everywhere).")
    replay: DirectoryPath | None = setting(
        None,
        "Replay the CSV candles in this directory as provider replay: one <SYMBOL>-USD_5m.csv per coin with"
        " columns Date,Close,High,Low,Open,Volume.",
    )
    speed: float = setting(
        60.0, "Replay speed in market seconds per second (a 5-minute candle every 300/SPEED s).", ge=0.01
    )
    replay_limit: int | None = setting(None, "Replay only the first N candle times.", shown="all", ge=1)
    replay_window: int = setting(
        1,
        "Candle times fetched but not yet confirmed stored: with 1 each candle is stored before the next is"
        " served (exact row counts even across faults); more pipelines the replay (the soak uses 4); a candle"
        " lost in flight is then only noticed after the 30 s stall patience.",
        ge=1,
    )
    no_demo_fallback: bool = setting(
        False, "If the live provider cannot be reached, exit 1 with the reason instead of simulating."
    )
    scrape_provider: Literal[ProviderName, "demo"] | None = setting(
        None,
        "Live provider (demo = --demo).",
        shown="coinmarketcap if CMC_API_KEY (or CMC_API_KEY_FILE) is set, else coingecko",
    )
    scrape_interval: float | None = setting(
        None,
        f"Seconds between data points: ≥ {MIN_INTERVAL_LIVE:g} for live providers, ≥ {MIN_INTERVAL_LOCAL:g} for"
        " --demo/--replay (a sub-second value with a live provider exits 2); local markets are polled twice as"
        f" often, at most every {MIN_INTERVAL_LOCAL:g} s.",
        shown=f"{LIVE_INTERVAL:g} live, {DEMO_INTERVAL:g} demo, 300/SPEED replay",
        ge=MIN_INTERVAL_LOCAL,
    )
    scraper_config: Path | None = setting(
        None,
        "Scraper config; written with the original 14 coins if absent, never overwritten.",
        shown=f"STATE_DIR/scraper.yaml (given dir) or ./{DEFAULT_STATE}/scraper.yaml",
    )
    state_dir: Path | None = setting(
        None,
        "DuckDB file, JetStream data, logs, run.json and the mode of one mode's data (a given dir refuses"
        " another mode's).",
        shown=f"./{DEFAULT_STATE}/demo, /replay or /live",
    )
    dev_host: str = setting("127.0.0.1", "Interface the API and the dashboard listen on.")
    api_port: int = setting(8000, "Ingester API port.", ge=1, le=65535)
    dashboard_port: int = setting(5006, "Dashboard port.", ge=1, le=65535)
    no_dashboard: bool = setting(False, "Run without the dashboard (API only).")
    nats_port: int = setting(4222, "Embedded NATS client port.", ge=1, le=65535)

    @model_validator(mode="after")
    def _consistent(self) -> DevSettings:
        if self.simulated and self.replay:
            raise ValueError("--demo and --replay exclude each other")
        interval = self.scrape_interval
        if not self.local and interval is not None and interval < MIN_INTERVAL_LIVE:
            raise ValueError(
                f"SCRAPE_INTERVAL / --scrape-interval: {interval:g} s is below {MIN_INTERVAL_LIVE:g} s,"
                " allowed only with --demo or --replay"
            )
        return self

    @property
    def simulated(self) -> bool:
        """The demo simulator was asked for (--demo or --scrape-provider demo)."""
        return self.demo or self.scrape_provider == "demo"

    @property
    def local(self) -> bool:
        """The local market (simulator or replay) rather than a live provider, as asked."""
        return self.simulated or self.replay is not None
