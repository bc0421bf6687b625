"""The DuckDB schema and its migrations, applied in order at start, each in its own transaction.

`crypto_prices` keeps the original project's six columns first (name, symbol, price,
percent_change_24h, market_cap, timestamp) so its README queries still work; migration 1
creates exactly that legacy table when absent, migration 2 upgrades it (or a legacy file)
to the current layout. Migration 4 adds candles beside it: provider history never changes
`crypto_prices`, whose rows stay the quotes scraped live.
"""

from __future__ import annotations

import logging

import duckdb

log = logging.getLogger(__name__)

QUOTE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "VARCHAR"),
    ("symbol", "VARCHAR"),
    ("price", "DOUBLE"),
    ("percent_change_24h", "DOUBLE"),
    ("market_cap", "DOUBLE"),
    ("timestamp", "TIMESTAMP"),
    ("provider", "VARCHAR"),
    ("coin_id", "VARCHAR"),
    ("volume_24h", "DOUBLE"),
    ("percent_change_1h", "DOUBLE"),
    ("percent_change_7d", "DOUBLE"),
    ("rank", "INTEGER"),
    ("received_at", "TIMESTAMP"),
)
"""Column order of crypto_prices (and of the Arrow batches inserted into it)."""

LATEST_FIELDS: tuple[str, ...] = tuple(c for c, _ in QUOTE_COLUMNS if c not in ("provider", "coin_id"))

CANDLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("provider", "VARCHAR"),
    ("coin_id", "VARCHAR"),
    ("interval", "INTEGER"),
    ("open_time", "TIMESTAMP"),
    ("symbol", "VARCHAR"),
    ("name", "VARCHAR"),
    ("open", "DOUBLE"),
    ("high", "DOUBLE"),
    ("low", "DOUBLE"),
    ("close", "DOUBLE"),
    ("volume", "DOUBLE"),
    ("received_at", "TIMESTAMP"),
)
"""Column order of `candles` (and of the Arrow batches inserted into it). Identity: the first four."""

_CANDLES_COLUMNS = ",\n            ".join(
    f"{c} {t}{' NOT NULL' if i < 4 else ''}" for i, (c, t) in enumerate(CANDLE_COLUMNS)
)

_QUARANTINE_COLUMNS = "quarantined_at TIMESTAMP NOT NULL, reason VARCHAR NOT NULL"
_QUARANTINED_QUOTES = ", ".join(f"{c} {t}" for c, t in QUOTE_COLUMNS)
_QUARANTINED_CANDLES = ", ".join(f"{c} {t}" for c, t in CANDLE_COLUMNS)

_COINS_COLUMNS = ",\n    ".join(f"{c} {t}" for c, t in QUOTE_COLUMNS if c not in ("provider", "coin_id"))

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "legacy crypto_prices table",
        """
        CREATE TABLE IF NOT EXISTS crypto_prices (
            name VARCHAR, symbol VARCHAR, price DOUBLE, percent_change_24h DOUBLE,
            market_cap DOUBLE, timestamp TIMESTAMP
        );
        """,
    ),
    (
        2,
        "provider identity, extra quote fields, coins summary, hourly rollup, alerts, counters",
        f"""
        ALTER TABLE crypto_prices ADD COLUMN IF NOT EXISTS provider VARCHAR;
        ALTER TABLE crypto_prices ADD COLUMN IF NOT EXISTS coin_id VARCHAR;
        ALTER TABLE crypto_prices ADD COLUMN IF NOT EXISTS volume_24h DOUBLE;
        ALTER TABLE crypto_prices ADD COLUMN IF NOT EXISTS percent_change_1h DOUBLE;
        ALTER TABLE crypto_prices ADD COLUMN IF NOT EXISTS percent_change_7d DOUBLE;
        ALTER TABLE crypto_prices ADD COLUMN IF NOT EXISTS rank INTEGER;
        ALTER TABLE crypto_prices ADD COLUMN IF NOT EXISTS received_at TIMESTAMP;
        UPDATE crypto_prices SET provider = 'coinmarketcap' WHERE provider IS NULL;
        UPDATE crypto_prices SET coin_id = lower(symbol) WHERE coin_id IS NULL;
        UPDATE crypto_prices SET received_at = timestamp WHERE received_at IS NULL;
        CREATE TABLE coins (
            provider VARCHAR NOT NULL,
            coin_id VARCHAR NOT NULL,
            records BIGINT NOT NULL,
            first_timestamp TIMESTAMP,
            {_COINS_COLUMNS},
            PRIMARY KEY (provider, coin_id)
        );
        INSERT INTO coins BY NAME
        SELECT provider, coin_id, count(*) OVER w AS records, min(timestamp) OVER w AS first_timestamp,
               {", ".join(LATEST_FIELDS)}
        FROM crypto_prices
        WINDOW w AS (PARTITION BY provider, coin_id)
        QUALIFY row_number() OVER (PARTITION BY provider, coin_id ORDER BY timestamp DESC) = 1;
        CREATE TABLE crypto_prices_hourly (
            provider VARCHAR NOT NULL,
            coin_id VARCHAR NOT NULL,
            hour TIMESTAMP NOT NULL,
            symbol VARCHAR,
            name VARCHAR,
            open DOUBLE,
            high DOUBLE,
            low DOUBLE,
            close DOUBLE,
            volume_24h DOUBLE,
            samples BIGINT,
            first_ts TIMESTAMP,
            last_ts TIMESTAMP,
            PRIMARY KEY (provider, coin_id, hour)
        );
        CREATE TABLE alerts (
            symbol VARCHAR NOT NULL,
            condition VARCHAR NOT NULL,
            threshold DOUBLE NOT NULL,
            price DOUBLE,
            change_24h DOUBLE,
            fired_at TIMESTAMP NOT NULL,
            message VARCHAR,
            provider VARCHAR,
            coin_id VARCHAR,
            quote_timestamp TIMESTAMP
        );
        CREATE TABLE ingest_counters (name VARCHAR PRIMARY KEY, value BIGINT NOT NULL);
        INSERT INTO ingest_counters VALUES ('rejected', 0), ('duplicates', 0), ('ingested', 0);
        CREATE TABLE ingest_state (key VARCHAR PRIMARY KEY, value VARCHAR);
        """,
    ),
    (
        3,
        "identities of rolled-up quotes, so a redelivered old quote is a duplicate, not one more sample",
        """
        CREATE TABLE rolled_up_quotes (
            provider VARCHAR NOT NULL, coin_id VARCHAR NOT NULL, timestamp TIMESTAMP NOT NULL
        );
        """,
    ),
    (
        4,
        "candles (provider history), their hourly rollup and rolled-up identities, candle counters",
        f"""
        CREATE TABLE candles (
            {_CANDLES_COLUMNS}
        );
        CREATE TABLE candles_hourly (
            provider VARCHAR NOT NULL,
            coin_id VARCHAR NOT NULL,
            hour TIMESTAMP NOT NULL,
            symbol VARCHAR,
            name VARCHAR,
            open DOUBLE,
            high DOUBLE,
            low DOUBLE,
            close DOUBLE,
            volume DOUBLE,
            candles BIGINT,
            first_open TIMESTAMP,
            last_open TIMESTAMP,
            PRIMARY KEY (provider, coin_id, hour)
        );
        CREATE TABLE rolled_up_candles (
            provider VARCHAR NOT NULL, coin_id VARCHAR NOT NULL, interval INTEGER NOT NULL,
            open_time TIMESTAMP NOT NULL
        );
        ALTER TABLE coins ADD COLUMN candles BIGINT DEFAULT 0;
        UPDATE coins SET candles = 0;
        INSERT INTO ingest_counters VALUES ('candles', 0), ('candle_duplicates', 0);
        """,
    ),
    (
        5,
        "alert identity, window rules, notify targets, the JetStream outbox and delivery receipts",
        # Alerts stored before this were published on core NATS already: marked published, never re-sent.
        """
        ALTER TABLE alerts ADD COLUMN IF NOT EXISTS alert_id VARCHAR;
        ALTER TABLE alerts ADD COLUMN IF NOT EXISTS rule_id VARCHAR;
        ALTER TABLE alerts ADD COLUMN IF NOT EXISTS name VARCHAR;
        ALTER TABLE alerts ADD COLUMN IF NOT EXISTS window_seconds DOUBLE;
        ALTER TABLE alerts ADD COLUMN IF NOT EXISTS change_pct DOUBLE;
        ALTER TABLE alerts ADD COLUMN IF NOT EXISTS notify VARCHAR[];
        ALTER TABLE alerts ADD COLUMN IF NOT EXISTS published_at TIMESTAMP;
        UPDATE alerts SET
            alert_id = 'legacy-' || md5(symbol || condition || CAST(threshold AS VARCHAR) || CAST(fired_at AS VARCHAR)),
            rule_id = symbol || ' ' || condition || ' ' || CAST(threshold AS VARCHAR),
            published_at = fired_at
        WHERE alert_id IS NULL;
        CREATE TABLE alert_deliveries (
            alert_id VARCHAR NOT NULL,
            target VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            attempts INTEGER NOT NULL,
            reason VARCHAR,
            updated_at TIMESTAMP NOT NULL,
            delivered_at TIMESTAMP,
            latency_seconds DOUBLE,
            targets INTEGER,
            PRIMARY KEY (alert_id, target)
        );
        """,
    ),
    (
        6,
        "quarantine for rows stamped in the future (moved out of crypto_prices and candles, see quarantine.py)",
        f"""
        CREATE TABLE quarantined_quotes ({_QUARANTINED_QUOTES}, {_QUARANTINE_COLUMNS});
        CREATE TABLE quarantined_candles ({_QUARANTINED_CANDLES}, {_QUARANTINE_COLUMNS});
        """,
    ),
    (
        7,
        "the JetStream messages whose rejections were counted, so a redelivery counts none again (rejections.py)",
        """
        CREATE TABLE counted_rejections (
            stream VARCHAR NOT NULL, seq BIGINT NOT NULL, stored_at TIMESTAMP NOT NULL, records BIGINT NOT NULL
        );
        """,
    ),
    (
        8,
        "candles_hourly keeps the interval of the candles it rolled up (sources.py ranks a rolled-up hour with them)",
        # Hours rolled up before this: their interval from the identities kept in rolled_up_candles, else
        # the spacing of their candles snapped to a sub-hour interval (a lone candle: the coarsest).
        """
        ALTER TABLE candles_hourly ADD COLUMN interval INTEGER;
        UPDATE candles_hourly SET interval = r.interval
        FROM (
            SELECT provider, coin_id, date_trunc('hour', open_time) AS hour, min(interval) AS interval
            FROM rolled_up_candles GROUP BY ALL
        ) r
        WHERE candles_hourly.provider = r.provider AND candles_hourly.coin_id = r.coin_id
          AND candles_hourly.hour = r.hour;
        UPDATE candles_hourly SET interval = CASE
            WHEN candles > 1 AND epoch(last_open - first_open) / (candles - 1) < 180 THEN 60
            WHEN candles > 1 AND epoch(last_open - first_open) / (candles - 1) < 600 THEN 300
            ELSE 900 END
        WHERE interval IS NULL;
        """,
    ),
)

ALERT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("alert_id", "VARCHAR"),
    ("rule_id", "VARCHAR"),
    ("symbol", "VARCHAR"),
    ("name", "VARCHAR"),
    ("condition", "VARCHAR"),
    ("threshold", "DOUBLE"),
    ("window_seconds", "DOUBLE"),
    ("price", "DOUBLE"),
    ("change_24h", "DOUBLE"),
    ("change_pct", "DOUBLE"),
    ("fired_at", "TIMESTAMP"),
    ("message", "VARCHAR"),
    ("provider", "VARCHAR"),
    ("coin_id", "VARCHAR"),
    ("quote_timestamp", "TIMESTAMP"),
    ("notify", "VARCHAR[]"),
)
"""The columns of an `alerts` row as the alert engine makes it (published_at is set by the outbox)."""


def current_version(conn: duckdb.DuckDBPyConnection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()[0]
    return int(row[0]) if row else 0


def migrate(conn: duckdb.DuckDBPyConnection) -> int:
    """Apply every migration newer than the file's version; return the resulting version."""
    version = current_version(conn)
    for number, title, sql in MIGRATIONS:
        if number <= version:
            continue
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations VALUES (?, now())", [number])
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        log.info("applied schema migration %d: %s", number, title)
        version = number
    return version
