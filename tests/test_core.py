"""The shared quote model, message contract and config schema."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from cryptoviz.core import contract
from cryptoviz.core.config import ConfigError, dump_config, load_config, parse_config, parse_duration
from cryptoviz.core.quote import InvalidQuote, make_quote

TS = "2025-01-13T00:05:00Z"


def quote(**overrides):
    fields = dict(provider="coingecko", coin_id="bitcoin", symbol="btc", name="Bitcoin", price="94446.98", timestamp=TS)
    fields.update(overrides)
    return make_quote(**fields)


def test_numbers_as_strings_are_coerced_and_missing_optionals_stay_null():
    q = quote(volume_24h="123.5")
    assert q.price == pytest.approx(94446.98)
    assert q.symbol == "BTC"
    assert q.volume_24h == 123.5
    assert q.market_cap is None and q.rank is None
    assert q.timestamp == datetime(2025, 1, 13, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"price": None}, "missing_price"),
        ({"price": math.nan}, "nonfinite_price"),
        ({"price": "NaN"}, "nonfinite_price"),
        ({"price": -1}, "nonpositive_price"),
        ({"price": 1e12}, "out_of_range_price"),
        ({"coin_id": None}, "missing_coin_id"),
        ({"price": "abc"}, "invalid_price"),
        ({"market_cap": -5}, "out_of_range_market_cap"),
        ({"timestamp": "yesterday"}, "invalid_timestamp"),
        ({"provider": "evil"}, "unknown_provider"),
    ],
)
def test_invalid_records_are_rejected_with_a_stable_reason(overrides, reason):
    with pytest.raises(InvalidQuote) as info:
        quote(**overrides)
    assert info.value.reason == reason


def test_wire_round_trip_preserves_the_quote():
    q = quote(rank=1, percent_change_24h=-2.5)
    assert make_quote(**q.to_json_dict()) == q


def test_contract_chunks_large_scrapes_with_content_derived_ids():
    quotes = [quote(coin_id=f"c{i}", symbol=f"C{i}") for i in range(1200)]
    messages = contract.encode_scrape("coingecko", quotes)
    assert [len(contract.decode_message(m.payload).quotes) for m in messages] == [500, 500, 200]
    assert all(len(m.payload) < 1024 * 1024 for m in messages)
    again = contract.encode_scrape("coingecko", list(reversed(quotes)))
    assert [m.msg_id for m in again] == [m.msg_id for m in messages]
    moved = contract.encode_scrape("coingecko", [quote(timestamp="2025-01-13T00:10:00Z")])
    assert moved[0].msg_id != contract.encode_scrape("coingecko", [quote()])[0].msg_id


def test_decode_keeps_valid_quotes_and_counts_bad_ones():
    original = quote()
    payload = contract.encode_scrape("coingecko", [original])[0].payload.replace(
        b'"quotes":[', b'"quotes":[{"coin_id":"x","price":-3},'
    )
    batch = contract.decode_message(payload)
    assert batch.quotes == [original]
    assert sum(batch.rejected.values()) == 1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"{not json", "malformed_json"), (b'{"schema": 99}', "unknown_schema"), (b"[]", "not_an_object")],
)
def test_unusable_envelopes_raise_contract_errors(payload, reason):
    with pytest.raises(contract.ContractError) as info:
        contract.decode_message(payload)
    assert info.value.reason == reason


def test_config_file_round_trip(tmp_path):
    path = tmp_path / "scraper.yaml"
    path.write_text(
        "provider: coingecko\ncoins:\n  - symbol: BTC\n    ids: {coingecko: bitcoin}\n"
        "    alerts: [{above: 100000, cooldown: 30m}]\n  - symbol: ETH\n"
    )
    config = load_config(path)
    assert [c.symbol for c in config.coins] == ["BTC", "ETH"]
    assert config.coins[0].alerts[0].cooldown_seconds == 1800
    assert parse_config(__import__("yaml").safe_load(dump_config(config))) == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"coins": [{"symbol": "btc"}]}, "coins.0.symbol"),
        ({"coins": [{"symbol": "BTC"}, {"symbol": "BTC"}]}, "listed twice"),
        ({"provider": "nasdaq"}, "provider"),
        ({"colour": "red"}, "colour"),
        ({"coins": [{"symbol": "BTC", "alerts": [{"above": 1, "below": 2}]}]}, "exactly one"),
        ({"top_n": 0}, "top_n"),
    ],
)
def test_invalid_configs_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_unreadable_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("coins: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_durations():
    assert parse_duration("1h30m") == 5400
    assert parse_duration(90) == 90
    with pytest.raises(ValueError):
        parse_duration("soon")
