"""The admin token guarding `/api/v1/admin/*`: from ADMIN_TOKEN or a file (ADMIN_TOKEN_FILE, e.g. a
mounted Secret, re-read on each use so a rotated Secret applies without a restart). Never logged."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path

MIN_LENGTH = 16


class AdminTokenError(ValueError):
    """The token is unusable; the message names the setting, never the value."""


def _checked(value: str, where: str) -> str:
    token = value.strip()
    if len(token) < MIN_LENGTH:
        raise AdminTokenError(f"{where} must be at least {MIN_LENGTH} characters (e.g. `openssl rand -hex 24`)")
    return token


@dataclass(frozen=True, slots=True)
class AdminToken:
    value: str | None = field(default=None, repr=False)
    file: Path | None = None

    @classmethod
    def of(cls, value: str | None, file: str | Path | None) -> AdminToken:
        """Checked at start: a bad setting stops the ingester with a clear message."""
        if value and file:
            raise AdminTokenError("set ADMIN_TOKEN or ADMIN_TOKEN_FILE, not both")
        token = cls(value=_checked(value, "ADMIN_TOKEN") if value else None, file=Path(file) if file else None)
        token.current()
        return token

    @property
    def configured(self) -> bool:
        return self.value is not None or self.file is not None

    def current(self) -> str | None:
        """The token now; None when admin access is off. A file that became unreadable raises."""
        if self.file is None:
            return self.value
        try:
            text = self.file.read_text(encoding="utf-8")
        except OSError as exc:
            raise AdminTokenError(f"ADMIN_TOKEN_FILE {self.file} cannot be read: {exc.strerror}") from None
        return _checked(text, f"the token in ADMIN_TOKEN_FILE {self.file}")

    def matches(self, given: str) -> bool:
        """Constant-time comparison (no timing hint of how much of a guess was right)."""
        expected = self.current()
        return expected is not None and hmac.compare_digest(given.encode(), expected.encode())
