"""Where alerts go: NOTIFY_URLS (the target named `default`, for every alert) and the named targets of
NOTIFY_TARGETS_FILE (`{name: [url, ...]}`), chosen per coin by `notify: [name]`.

Apprise URLs carry tokens and passwords, so a `Target` is known by its name only: `default`, `ops`, or
`ops/2` for the second URL of a name with several. Its URL is never logged or put in an error; an
invalid one is reported by position and scheme.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from apprise.utils.parse import parse_urls

from cryptoviz.core.config import TARGET_NAME_PATTERN

DEFAULT = "default"
_NAME = re.compile(TARGET_NAME_PATTERN)


class TargetError(ValueError):
    """Unusable target configuration; the message names the place, never the URL."""


@dataclass(frozen=True)
class Target:
    name: str
    """`default`, `ops`, or `ops/2` (the second URL of `ops`)."""
    group: str
    url: str = field(repr=False)
    scheme: str = ""


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "?"


def split_urls(text: str | None) -> list[str]:
    """Apprise URLs separated by commas or whitespace (Apprise's own splitting keeps `?to=a,b` whole)."""
    return [u for u in parse_urls(text or "") if u.strip()]


def _group(name: str, urls: list[str]) -> list[Target]:
    if len(urls) == 1:
        return [Target(name, name, urls[0], scheme_of(urls[0]))]
    return [Target(f"{name}/{i}", name, url, scheme_of(url)) for i, url in enumerate(urls, 1)]


def read_file(path: str | Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TargetError(f"cannot read {what} {path}: {exc.strerror}") from None


def parse_targets_file(text: str, source: str = "NOTIFY_TARGETS_FILE") -> dict[str, list[str]]:
    """`{name: [url, ...]}` or `{name: url}` (YAML or JSON)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise TargetError(f"{source} is not valid YAML{where}") from None  # the text holds secrets: no excerpt
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise TargetError(f"{source} must map target names to Apprise URLs, e.g. ops: [tgram://...]")
    result: dict[str, list[str]] = {}
    for name, value in data.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise TargetError(f"{source}: target name {str(name)[:64]!r} must match {TARGET_NAME_PATTERN}")
        if name == DEFAULT:
            raise TargetError(f"{source}: the name {DEFAULT!r} is reserved for NOTIFY_URLS")
        urls = split_urls(value) if isinstance(value, str) else value
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) and u.strip() for u in urls):
            raise TargetError(f"{source}: target {name!r} needs one Apprise URL or a list of them")
        result[name] = [u.strip() for u in urls]
    return result


@dataclass(frozen=True)
class Targets:
    default: list[Target]
    named: dict[str, list[Target]]

    @classmethod
    def build(cls, urls: Iterable[str], named: Mapping[str, list[str]]) -> Targets:
        return cls(
            default=_group(DEFAULT, list(urls)) if urls else [],
            named={name: _group(name, list(group)) for name, group in sorted(named.items())},
        )

    def all(self) -> list[Target]:
        return [*self.default, *(t for group in self.named.values() for t in group)]

    def resolve(self, names: Iterable[str]) -> tuple[list[Target], list[str]]:
        """The targets of one alert (default first, each once) and the names nobody configured."""
        chosen = list(self.default)
        unknown = []
        for name in dict.fromkeys(names):
            if name in self.named:
                chosen.extend(self.named[name])
            else:
                unknown.append(name)
        return chosen, unknown


def load_targets(urls: str | None, urls_file: str | None, targets_file: str | None) -> Targets:
    """NOTIFY_URLS plus NOTIFY_URLS_FILE (both count) and NOTIFY_TARGETS_FILE."""
    default = split_urls(urls)
    if urls_file:
        default += split_urls(read_file(urls_file, "NOTIFY_URLS_FILE"))
    named = parse_targets_file(read_file(targets_file, "NOTIFY_TARGETS_FILE")) if targets_file else {}
    return Targets.build(list(dict.fromkeys(default)), named)
