"""OpenAPI descriptions shared by the routes: the refusal body and the alternative table media."""

from __future__ import annotations

from typing import Any

from cryptoviz.core.api_contract import Problem

PROBLEM: dict[str, Any] = {"model": Problem, "description": "Refused, with the reason"}
TABLE_MEDIA: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "OK: JSON, or the data table as CSV, Arrow IPC stream or Parquet (by `format` or Accept)",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.apache.arrow.stream": {"schema": {"type": "string", "format": "binary"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}
