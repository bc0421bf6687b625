"""One settings model per service, declared once: env vars, click flags and the docs tables come from it.

A service declares a `ServiceSettings` subclass whose fields are made with `setting(...)`. From it:
- `click_options(Model)` adds one click option per field (flag `--field-name`, env var `FIELD_NAME`,
  type, range, choices, default and help all taken from the field);
- `from_options(Model, values)` validates what click collected into the model, naming the env var and
  flag of a bad value;
- pydantic-settings reads the same env vars when a model is built without the CLI (the operator, whose
  model says `cli = False`: its docs table has no flags; `describe(Model, error)` names the bad env var);
  `from_env(Model, environ)` reads them from a given mapping instead (another process's environment);
- a list-valued setting (`CommaList`) is `a, b` in its env var and flag alike, never JSON;
- `settings_markdown(Model)` is the table between `<!-- settings: module:Model -->` and
  `<!-- end of settings -->` in docs/*.md; `python -m cryptoviz.core.settings [--check]` rewrites
  (or checks) every such table, and a test keeps them equal.
"""

from __future__ import annotations

import importlib
import re
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

import annotated_types
import click
from pydantic import BeforeValidator, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound="ServiceSettings")

DOCS_START = re.compile(r"<!-- settings: ([\w.]+):(\w+) -->")
DOCS_END = "<!-- end of settings -->"


def _split_commas(value: object) -> object:
    if value is None:  # click's unset
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value


CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_commas)]
"""A list-valued setting: comma-separated in its env var and flag (`BTC, ETH`), a tuple in code; "" is empty."""


class ServiceSettings(BaseSettings):
    """Base of every service's settings: frozen, no unknown names, env vars matched case-insensitively
    and empty ones ignored (as click does)."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, case_sensitive=False, env_ignore_empty=True
    )
    cli: ClassVar[bool] = True
    """False: env vars only (a process run by another tool, e.g. the operator under `kopf run`)."""


def setting(
    default: Any,
    help: str,
    *,
    env: str | None = None,
    flag: str | None = None,
    shown: str | None = None,
    text: bool = False,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A field of a settings model.

    env/flag: when they differ from FIELD_NAME / --field-name. shown: the default as the docs say it
    (e.g. "the provider's top 20"). text: click passes the raw string and the model parses it (e.g. 5m).
    """
    extra: dict[str, Any] = {"text": text}
    if flag:
        extra["flag"] = flag
    if shown is not None:
        extra["shown"] = shown
    return Field(default, description=help, validation_alias=env, json_schema_extra=extra, ge=ge, gt=gt, le=le, lt=lt)


def env_name(name: str, field: FieldInfo) -> str:
    return field.validation_alias if isinstance(field.validation_alias, str) else name.upper()


def flag_name(name: str, field: FieldInfo) -> str:
    return str(_extra(field).get("flag") or "--" + name.replace("_", "-"))


def _extra(field: FieldInfo) -> dict[str, Any]:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def _base_type(annotation: Any) -> Any:
    """`X | None` → X; `Annotated[X, ...]` (e.g. pydantic's DirectoryPath) → X."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            annotation = rest[0]
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


def _bounds(field: FieldInfo) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            bounds["min"] = item.ge
        elif isinstance(item, annotated_types.Gt):
            bounds["min"], bounds["min_open"] = item.gt, True
        elif isinstance(item, annotated_types.Le):
            bounds["max"] = item.le
        elif isinstance(item, annotated_types.Lt):
            bounds["max"], bounds["max_open"] = item.lt, True
    return bounds


def _click_type(field: FieldInfo) -> click.ParamType[Any] | None:
    if _extra(field).get("text"):
        return click.STRING
    kind = _base_type(field.annotation)
    if get_origin(kind) is Literal:
        return click.Choice([str(v) for v in get_args(kind)], case_sensitive=False)
    bounds = _bounds(field)
    if kind is int:
        return click.IntRange(**bounds) if bounds else click.INT
    if kind is float:
        return click.FloatRange(**bounds) if bounds else click.FLOAT
    if kind is Path:
        return click.Path(path_type=Path)
    return click.STRING


def _cli_default(field: FieldInfo) -> Any:
    default = field.get_default(call_default_factory=True)
    if isinstance(default, tuple | list):
        return ",".join(map(str, default)) or None  # None: no `default: ""` in --help
    return default.get_secret_value() if isinstance(default, SecretStr) else default


def _secret(field: FieldInfo) -> bool:
    return _base_type(field.annotation) is SecretStr


class SettingOption(click.Option):
    """A click option made from a settings field (a test checks every option of every command is one)."""


def options(model: type[ServiceSettings]) -> Iterator[click.Option]:
    """The click options of a model's fields, in declaration order."""
    for name, field in model.model_fields.items():
        is_flag = _base_type(field.annotation) is bool
        yield SettingOption(
            [flag_name(name, field), name],
            envvar=env_name(name, field),
            show_envvar=True,
            default=_cli_default(field),
            show_default=_extra(field).get("shown", not _secret(field)),
            type=None if is_flag else _click_type(field),
            is_flag=is_flag,
            help=field.description,
        )


def click_options(model: type[ServiceSettings]) -> Callable[[F], F]:
    """Decorator: the command takes one keyword argument per field (pass them to `from_options`)."""

    def decorate(command: F) -> F:
        params = getattr(command, "__click_params__", [])
        params.extend(reversed(list(options(model))))  # click reverses decorator order
        command.__click_params__ = params  # type: ignore[attr-defined]
        return command

    return decorate


def _explain(model: type[ServiceSettings], exc: ValidationError) -> tuple[str, str | None, str | None]:
    """The first error's message and the env var and flag of its setting (None when it is the model's)."""
    first = exc.errors()[0]
    loc = str(first["loc"][0]) if first["loc"] else ""
    found = next(((n, f) for n, f in model.model_fields.items() if loc.lower() in (n, env_name(n, f).lower())), None)
    message = str(first["msg"]).removeprefix("Value error, ")
    if found is None:
        return message, None, None
    return message, env_name(*found), flag_name(*found)


def from_options(model: type[M], values: Mapping[str, Any], **more: Any) -> M:
    """The model from click's values; a bad value is a usage error naming its env var and flag."""
    fields = model.model_fields
    try:
        return model(**{k: v for k, v in values.items() if k in fields}, **more)
    except ValidationError as exc:
        message, env, flag = _explain(model, exc)
        raise click.BadParameter(message, param_hint=f"{env} / {flag}" if env else None) from None


def describe(model: type[ServiceSettings], exc: ValidationError) -> str:
    """A model's validation error as one line naming the env var (for a process without flags)."""
    message, env, _ = _explain(model, exc)
    return f"{env}: {message}" if env else message


def from_env(model: type[M], environ: Mapping[str, str]) -> M:
    """The model from `environ` and not os.environ (e.g. the environment `cryptoviz dev` gives a child):
    names matched case-insensitively, empty values unset, every other field its default."""
    given = {name.upper(): value for name, value in environ.items() if value}
    values = {
        name: given.get(env_name(name, field).upper(), field.get_default(call_default_factory=True))
        for name, field in model.model_fields.items()
    }
    return model(**values)  # every field given: os.environ is not consulted


def _shown_default(field: FieldInfo) -> str:
    extra = _extra(field)
    if "shown" in extra:
        return str(extra["shown"])
    default = field.get_default(call_default_factory=True)
    if default is None or default == () or _secret(field):
        return "–"
    if isinstance(default, tuple):
        default = ",".join(map(str, default))
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return f"`{default}`"


def _allowed(field: FieldInfo) -> str:
    kind = _base_type(field.annotation)
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(kind))
    bounds = _bounds(field)
    if not bounds or _extra(field).get("text"):
        return ""
    low = _number(bounds["min"]) if "min" in bounds else ""
    high = _number(bounds["max"]) if "max" in bounds else ""
    above = f"{'>' if bounds.get('min_open') else '≥'} {low}"
    below = f"{'<' if bounds.get('max_open') else '≤'} {high}"
    if low and high:
        return f"{low} … {high}" if not (bounds.get("min_open") or bounds.get("max_open")) else f"{above}, {below}"
    return above if low else below


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def settings_markdown(model: type[ServiceSettings]) -> str:
    """The docs table of a model: env var, flag (unless `cli = False`), default, allowed values, meaning."""
    head = ["env var", *(["flag"] if model.cli else []), "default", "allowed", "meaning"]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, field in model.model_fields.items():
        cells = [
            f"`{env_name(name, field)}`",
            *([f"`{flag_name(name, field)}`"] if model.cli else []),
            _shown_default(field),
            _allowed(field),
            (field.description or "").replace("\n", " "),
        ]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def env_names(model: type[ServiceSettings]) -> list[str]:
    return [env_name(name, field) for name, field in model.model_fields.items()]


def env_of(model: type[ServiceSettings], name: str) -> str:
    """The environment variable of one of `model`'s settings; KeyError if it has none by that name."""
    field = model.model_fields.get(name)
    if field is None:
        raise KeyError(f"{model.__name__} has no setting {name!r}")
    return env_name(name, field)


def named(model: type[ServiceSettings], name: str) -> str:
    """How a user sets one of `model`'s settings, for messages: `--flag / ENV` (only ENV without a CLI)."""
    env = env_of(model, name)
    return f"{flag_name(name, model.model_fields[name])} / {env}" if model.cli else env


def env_for(model: type[ServiceSettings], **values: object) -> dict[str, str]:
    """The environment that hands `values` (setting name → value; None: left out) to a command whose
    settings are `model`, so a launcher names a child's settings by field and a renamed one fails here
    instead of being silently ignored by the child."""
    return {env_of(model, name): str(value) for name, value in values.items() if value is not None}


def synced(text: str) -> str:
    """`text` with every settings table regenerated from its model."""
    out: list[str] = []
    lines = iter(text.splitlines(keepends=True))
    for line in lines:
        out.append(line)
        match = DOCS_START.search(line)
        if not match:
            continue
        model = getattr(importlib.import_module(match[1]), match[2])
        out.append(settings_markdown(model) + "\n")
        for rest in lines:
            if rest.strip() == DOCS_END:
                out.append(rest)
                break
        else:
            raise ValueError(f"{match[0]} has no {DOCS_END}")
    return "".join(out)


def main(argv: list[str]) -> int:
    """Rewrite the settings tables of docs/*.md and README.md (--check: exit 1 if one is out of date)."""
    check = "--check" in argv
    root = Path(__file__).resolve().parents[3]
    stale = []
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        new = synced(text)
        if new != text:
            stale.append(path.relative_to(root))
            if not check:
                path.write_text(new, encoding="utf-8")
    for path in stale:
        print(f"{path}: {'out of date' if check else 'rewritten'}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
