"""Encoded `/history` answers, reused until the next commit changes the data.

Dashboards ask the same question again and again (every refresh, every open session, and all of
them right after each commit event). An answer depends only on its parameters and on the data,
so it is cached under its parameters and the store's commit generation; the first commit after
it makes it unreachable, and the cache drops the old generation as soon as a newer one arrives.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from fastapi import Response


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    body: bytes
    media_type: str | None
    headers: dict[str, str]

    @classmethod
    def of(cls, response: Response) -> CachedAnswer:
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        return cls(bytes(response.body), response.media_type, headers)

    def response(self) -> Response:
        return Response(self.body, media_type=self.media_type, headers=self.headers)


class AnswerCache:
    """Least recently used answers of one generation, at most `max_bytes` of bodies."""

    def __init__(self, max_bytes: int = 64 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._generation = -1
        self._answers: OrderedDict[Hashable, CachedAnswer] = OrderedDict()
        self._bytes = 0

    def get(self, key: Hashable, generation: int) -> CachedAnswer | None:
        with self._lock:
            if generation != self._generation:
                return None
            answer = self._answers.get(key)
            if answer is not None:
                self._answers.move_to_end(key)
            return answer

    def put(self, key: Hashable, generation: int, response: Response) -> None:
        answer = CachedAnswer.of(response)
        if len(answer.body) > self.max_bytes:
            return
        with self._lock:
            if generation < self._generation:
                return  # computed from data already superseded
            if generation > self._generation:
                self._generation, self._answers, self._bytes = generation, OrderedDict(), 0
            previous = self._answers.pop(key, None)
            self._bytes += len(answer.body) - (len(previous.body) if previous else 0)
            self._answers[key] = answer
            while self._bytes > self.max_bytes:
                _, dropped = self._answers.popitem(last=False)
                self._bytes -= len(dropped.body)
