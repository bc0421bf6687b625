"""The TrackedCrypto CRD: valid and invalid manifests against its openAPIV3Schema (jsonschema)
and its CEL rules (cel-python), each invalid one failing for the intended reason."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml
from celpy import celtypes
from cryptoviz.core.config import SYMBOL_PATTERN

ROOT = Path(__file__).resolve().parent.parent
CRD_PATH = ROOT / "charts" / "cryptoviz" / "crds" / "trackedcryptos.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("trackedcrypto-*.yaml"))
CRD = yaml.safe_load(CRD_PATH.read_text())
(VERSION,) = CRD["spec"]["versions"]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
CEL = celpy.Environment()


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Emulate kubectl's strict field validation (unknown fields are errors) and list-type=set."""
    schema = copy.deepcopy(schema)
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        schema["additionalProperties"] = False
    if schema.get("x-kubernetes-list-type") == "set":
        schema["uniqueItems"] = True
    for key, sub in list(schema.get("properties", {}).items()):
        if key != "metadata":
            schema["properties"][key] = _strict(sub)
    if isinstance(schema.get("items"), dict):
        schema["items"] = _strict(schema["items"])
    return schema


VALIDATOR = jsonschema.Draft4Validator(_strict(SCHEMA))


def _to_cel(value: Any, schema: dict[str, Any]) -> Any:
    """JSON → CEL values typed by the schema, as the API server does (numbers are doubles)."""
    kind = schema.get("type")
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if kind == "number":
        return celtypes.DoubleType(float(value))
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, list):
        return celtypes.ListType([_to_cel(v, schema.get("items", {})) for v in value])
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return celtypes.MapType({celtypes.StringType(k): _to_cel(v, props.get(k, {})) for k, v in value.items()})
    raise TypeError(value)


def cel_errors(value: Any, schema: dict[str, Any] = SCHEMA, path: str = "") -> list[str]:
    errors = []
    for rule in schema.get("x-kubernetes-validations", []):
        program = CEL.program(CEL.compile(rule["rule"]))
        try:
            ok = program.evaluate({"self": _to_cel(value, schema)})
        except celpy.CELEvalError as exc:
            ok = exc
        if ok is not True and ok != celtypes.BoolType(True):
            errors.append(f"{path or '.'}: {rule['message']}")
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errors += cel_errors(value[key], sub, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += cel_errors(item, schema["items"], f"{path}[{i}]")
    return errors


def validation_errors(manifest: dict[str, Any]) -> list[str]:
    """Schema errors first; CEL rules run on schema-valid objects (the API server reports both,
    but a rule cannot be judged on a value of the wrong shape)."""
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(manifest)]
    return errors or cel_errors(manifest)


def manifest(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cryptoviz.io/v1alpha1",
        "kind": "TrackedCrypto",
        "metadata": {"name": "x"},
        "spec": {"symbol": "BTC", **spec},
    }


def test_crd_is_a_valid_custom_resource_definition() -> None:
    kubernetes_validate.validate(CRD, "1.30.0", strict=True)
    assert CRD["spec"]["group"] == "cryptoviz.io"
    assert CRD["spec"]["scope"] == "Namespaced"
    assert CRD["spec"]["names"]["shortNames"] == ["tc"]
    assert CRD["spec"]["names"]["categories"] == ["cryptoviz"]
    assert VERSION["name"] == "v1alpha1" and VERSION["subresources"] == {"status": {}}
    columns = [c["name"] for c in VERSION["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Symbol", "Price", "24h %", "Last Seen", "History", "Ready", "Age"]
    history = next(c for c in VERSION["additionalPrinterColumns"] if c["name"] == "History")
    assert (history["type"], history["jsonPath"]) == ("date", ".status.history.from")
    wide = [c["name"] for c in VERSION["additionalPrinterColumns"] if c.get("priority")]
    assert wide == ["Reason", "Accepted", "Backfilled"]
    assert SCHEMA["properties"]["spec"]["properties"]["symbol"]["pattern"] == SYMBOL_PATTERN


def test_every_cel_rule_compiles_and_has_a_message() -> None:
    def rules(schema: dict[str, Any]) -> list[dict[str, Any]]:
        found = list(schema.get("x-kubernetes-validations", []))
        for sub in schema.get("properties", {}).values():
            found += rules(sub)
        if isinstance(schema.get("items"), dict):
            found += rules(schema["items"])
        return found

    all_rules = rules(SCHEMA)
    assert len(all_rules) == 7
    for rule in all_rules:
        CEL.compile(rule["rule"])
        assert rule["message"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    assert validation_errors(yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"interval": "1m"},
        {"interval": "1h30m"},
        {"interval": "90s"},
        {"ids": {"coinmarketcap": "1"}},
        {"providers": ["binance", "kraken"], "paused": True, "displayName": "Bitcoin"},
        {"alerts": [{"below": 10}, {"above": 20}, {"change24hAbove": 5, "cooldown": "1d"}]},
        {"backfill": "90d"},
        {"backfill": "365d"},
        {"backfill": "0"},
        {"backfill": 0},
        {"backfill": 30},
        {
            "alerts": [
                {"changeAbove": {"percent": 5, "window": "1h"}},
                {"changeBelow": {"percent": 2.5, "window": "720h"}},
            ]
        },
        {"alerts": [{"staleAfter": "15m", "cooldown": "2h"}], "notify": ["team-telegram", "ops_mail"]},
    ],
)
def test_valid_specs(spec: dict[str, Any]) -> None:
    assert validation_errors(manifest(**spec)) == []


ONE_CONDITION = (
    ".spec.alerts[0]: an alert must set exactly one of "
    "above, below, change24hAbove, changeAbove, changeBelow, staleAfter"
)
INVALID = {
    "lower-case symbol": (manifest(symbol="btc"), "spec.symbol: 'btc' does not match"),
    "no symbol": (
        {"apiVersion": "cryptoviz.io/v1alpha1", "kind": "TrackedCrypto", "spec": {}},
        "'symbol' is a required",
    ),
    "no spec": ({"apiVersion": "cryptoviz.io/v1alpha1", "kind": "TrackedCrypto"}, "'spec' is a required"),
    "unknown provider": (manifest(providers=["ftx"]), "spec.providers.0: 'ftx' is not one of"),
    "duplicate provider": (manifest(providers=["binance", "binance"]), "has non-unique elements"),
    "empty providers": (manifest(providers=[]), "spec.providers: [] should be non-empty"),
    "unknown field": (manifest(symbols="BTC"), "'symbols' was unexpected"),
    "cmc id not a number": (
        manifest(ids={"coinmarketcap": "bitcoin"}),
        "spec.ids.coinmarketcap: 'bitcoin' is not valid",
    ),
    "unknown id provider": (manifest(ids={"ftx": "btc"}), "'ftx' was unexpected"),
    "interval below 1m": (manifest(interval="30s"), ".spec.interval: interval must be at least 1m"),
    "interval 59s": (manifest(interval="59s"), ".spec.interval: interval must be at least 1m"),
    "interval in days": (manifest(interval="1d"), "spec.interval: '1d' does not match"),
    "interval prose": (manifest(interval="5 minutes"), "spec.interval: '5 minutes' does not match"),
    "paused not bool": (manifest(paused="yes"), "spec.paused: 'yes' is not of type 'boolean'"),
    "alert with two conditions": (
        manifest(alerts=[{"above": 10, "below": 5}]),
        ONE_CONDITION,
    ),
    "alert with no condition": (
        manifest(alerts=[{"cooldown": "1h"}]),
        ONE_CONDITION,
    ),
    "below not under above": (
        manifest(alerts=[{"above": 100}, {"below": 100}]),
        ".spec.alerts: every alert's below must be lower than every alert's above",
    ),
    "negative threshold": (manifest(alerts=[{"above": -1}]), "spec.alerts.0.above: -1 is less than"),
    "zero change": (manifest(alerts=[{"change24hAbove": 0}]), "spec.alerts.0.change24hAbove: 0 is less than or equal"),
    "bad cooldown": (
        manifest(alerts=[{"above": 1, "cooldown": "soon"}]),
        "spec.alerts.0.cooldown: 'soon' does not match",
    ),
    "too many alerts": (manifest(alerts=[{"above": i + 1} for i in range(11)]), "is too long"),
    "backfill over a year": (manifest(backfill="366d"), ".spec.backfill: backfill must be at most 365d"),
    "backfill 999d": (manifest(backfill="999d"), ".spec.backfill: backfill must be at most 365d"),
    "backfill in weeks": (manifest(backfill="4w"), "spec.backfill: '4w' is not valid"),
    "backfill with a leading zero": (manifest(backfill="090d"), "spec.backfill: '090d' is not valid"),
    "backfill days as a big number": (manifest(backfill=400), "spec.backfill: 400 is not valid"),
    "backfill negative": (manifest(backfill=-1), "spec.backfill: -1 is not valid"),
    "change without window": (
        manifest(alerts=[{"changeAbove": {"percent": 5}}]),
        "spec.alerts.0.changeAbove: 'window' is a required property",
    ),
    "change of zero": (
        manifest(alerts=[{"changeBelow": {"percent": 0, "window": "1h"}}]),
        "spec.alerts.0.changeBelow.percent: 0 is less than or equal",
    ),
    "window too short": (
        manifest(alerts=[{"changeAbove": {"percent": 5, "window": "30s"}}]),
        ".spec.alerts[0].changeAbove: window must be between 1m and 720h",
    ),
    "window too long": (
        manifest(alerts=[{"changeBelow": {"percent": 5, "window": "721h"}}]),
        ".spec.alerts[0].changeBelow: window must be between 1m and 720h",
    ),
    "window in days": (
        manifest(alerts=[{"changeAbove": {"percent": 5, "window": "1d"}}]),
        "spec.alerts.0.changeAbove.window: '1d' does not match",
    ),
    "stale too short": (
        manifest(alerts=[{"staleAfter": "59s"}]),
        ".spec.alerts[0].staleAfter: staleAfter must be at least 1m",
    ),
    "stale and above": (manifest(alerts=[{"staleAfter": "5m", "above": 1}]), ONE_CONDITION),
    "notify bad name": (manifest(notify=["Team Telegram"]), "spec.notify.0: 'Team Telegram' does not match"),
    "notify twice": (manifest(notify=["ops", "ops"]), "has non-unique elements"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_manifests_fail_for_the_intended_reason(case: str) -> None:
    obj, reason = INVALID[case]
    errors = validation_errors(obj)
    assert len(errors) == 1, errors
    assert reason in errors[0], errors


@pytest.mark.parametrize("case", sorted(c for c in INVALID if VALIDATOR.is_valid(INVALID[c][0]) is False))
def test_cel_rules_add_no_second_message_to_a_schema_error(case: str) -> None:
    """The API server evaluates CEL rules even on values the schema rejected (unless the type is
    wrong), so a rule must not fail (or error) there too and add a misleading second message."""
    assert cel_errors(INVALID[case][0]) == []
