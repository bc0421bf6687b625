"""Admin routes: `POST /api/v1/admin/backup`.

Guarded in this order, each refusal a clear `{"error": ...}`: cross-site requests (a browser page
elsewhere) 403; admin access not configured 503; no or a wrong `Authorization: Bearer` token 401;
a backup already running 409; too little free disk 507. The export then has `backup_timeout`
seconds, transfer included: past it the export is interrupted or the transfer cut, and the work
directory is removed either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import urlsplit

import duckdb
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from cryptoviz.ingester import metrics
from cryptoviz.ingester.admin_token import AdminTokenError
from cryptoviz.ingester.api.deps import RuntimeDep
from cryptoviz.ingester.api.responses import PROBLEM
from cryptoviz.ingester.backup import Snapshot, check_space

log = logging.getLogger("cryptoviz.ingester")

_bearer = HTTPBearer(auto_error=False, description="ADMIN_TOKEN (or the content of ADMIN_TOKEN_FILE)")


def _refuse(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    metrics.API_REFUSED.labels(reason=reason).inc()
    return HTTPException(status, message, headers=headers)


def same_site(request: Request) -> None:
    """A browser says where a request comes from (Sec-Fetch-Site, Origin); command-line clients say
    nothing. Anything a page on another site sent is refused, before the token is even looked at."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    foreign_origin = origin is not None and urlsplit(origin).netloc != request.headers.get("host")
    if (site is not None and site not in ("same-origin", "none")) or foreign_origin:
        raise _refuse(403, "cross_site", "cross-site requests to admin endpoints are refused")


def admin(runtime: RuntimeDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    token = runtime.settings.admin
    if not token.configured:
        raise _refuse(
            503, "admin_off", "admin endpoints are off: start the ingester with ADMIN_TOKEN or ADMIN_TOKEN_FILE"
        )
    challenge = {"WWW-Authenticate": 'Bearer realm="cryptoviz-admin"'}
    if credentials is None:
        raise _refuse(401, "no_token", "send Authorization: Bearer <ADMIN_TOKEN>", challenge)
    try:
        accepted = token.matches(credentials.credentials)
    except AdminTokenError as exc:
        log.error("admin request refused: %s", exc)
        raise _refuse(503, "admin_off", f"admin endpoints are unavailable: {exc}") from None
    if not accepted:
        raise _refuse(401, "wrong_token", "wrong admin token", challenge)


router = APIRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    dependencies=[Depends(same_site), Depends(admin)],
    responses={code: PROBLEM for code in (401, 403, 409, 503, 507)},
)


class BackupSlot:
    """One backup at a time: each holds a whole export on disk and a connection for minutes."""

    def __init__(self) -> None:
        self.busy = False


class TarStream(StreamingResponse):
    """The snapshot as a tar, within the deadline; its work directory and the slot are released
    however the transfer ends (done, cut by the deadline, or the client gone)."""

    def __init__(self, snapshot: Snapshot, slot: BackupSlot, deadline: float, started: float) -> None:
        self.snapshot, self.slot, self.deadline, self.started = snapshot, slot, deadline, started
        chunks: Iterator[bytes] = snapshot.tar_chunks()
        super().__init__(
            iterate_in_threadpool(chunks),
            media_type="application/x-tar",
            headers={"Content-Disposition": 'attachment; filename="cryptoviz-backup.tar"'},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with asyncio.timeout_at(self.deadline):
                await super().__call__(scope, receive, send)
            log.info("backup sent", extra={"seconds": round(time.monotonic() - self.started, 3)})
        except TimeoutError:
            metrics.API_REFUSED.labels(reason="backup_timeout").inc()
            log.warning("backup transfer cut: it took longer than the backup timeout")
            raise
        finally:
            await asyncio.to_thread(self.snapshot.remove)
            self.slot.busy = False


async def _export(snapshot: Snapshot, deadline: float, timeout: float) -> None:
    task = asyncio.ensure_future(asyncio.to_thread(snapshot.export))
    done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
    if not done:
        snapshot.interrupt()
        with contextlib.suppress(duckdb.Error):
            await task
        raise _refuse(503, "backup_timeout", f"the backup took longer than {timeout:g} s and was stopped")
    try:
        task.result()
    except OSError as exc:
        raise _refuse(503, "backup_failed", f"cannot write the backup: {exc.strerror or exc}") from None


_TAR: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A tar of EXPORT DATABASE (Parquet files and the schema), consistent across all tables",
        "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post("/backup", responses=_TAR, response_class=StreamingResponse)
async def backup(request: Request, runtime: RuntimeDep) -> Response:
    """A consistent snapshot (one read transaction) of every table, as a tar of Parquet files."""
    slot: BackupSlot = request.app.state.backup_slot
    if slot.busy:
        raise _refuse(409, "backup_busy", "a backup is already running; try again when it has finished")
    space = await asyncio.to_thread(check_space, runtime.store)
    if not space.enough:
        raise _refuse(507, "no_space", space.message(runtime.store.path.parent))
    slot.busy = True
    started = time.monotonic()
    timeout = runtime.settings.backup_timeout
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        try:
            snapshot = await asyncio.to_thread(Snapshot, runtime.store)
        except OSError as exc:
            raise _refuse(503, "backup_failed", f"cannot write the backup: {exc.strerror or exc}") from None
        try:
            await _export(snapshot, deadline, timeout)
        except BaseException:
            await asyncio.to_thread(snapshot.remove)
            raise
    except BaseException:
        slot.busy = False
        raise
    log.info("backup snapshot written", extra={"seconds": round(time.monotonic() - started, 3)})
    return TarStream(snapshot, slot, deadline, started)
