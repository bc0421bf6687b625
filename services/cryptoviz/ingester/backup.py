"""Consistent snapshots while ingest continues.

Only the ingester may open the DuckDB file, so a backup is asked of the running ingester:
`POST /api/v1/admin/backup` runs `EXPORT DATABASE ... (FORMAT parquet)` inside one read
transaction on its own cursor (an MVCC snapshot: commits made meanwhile are not in it, and
the writer is not blocked) into a directory next to the database, streams it as a tar built on
the fly (so the disk holds one copy, and memory one chunk), then removes it; `cryptoviz backup
DIR` unpacks it into DIR. Restore with `IMPORT DATABASE 'DIR'` in a new DuckDB file.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cryptoviz.core.api_client import IngesterClient
from cryptoviz.ingester.store import Store

CHUNK = 1 << 20
HEADROOM_BYTES = 64 << 20
"""Left free beyond the estimated export, so ingest can still commit while a backup is written."""


@dataclass(frozen=True, slots=True)
class SpaceCheck:
    needed: int
    free: int

    @property
    def enough(self) -> bool:
        return self.free >= self.needed

    def message(self, where: Path) -> str:
        mib = 1 << 20
        return (
            f"not enough free space for a backup on {where}: about {self.needed / mib:,.0f} MiB needed "
            f"(the database's size and {HEADROOM_BYTES // mib} MiB for ingest), {self.free / mib:,.0f} MiB free"
        )


def space_needed(db_bytes: int, free: int) -> SpaceCheck:
    """The export (Parquet) is estimated at the database's own size: DuckDB and Parquet compress alike."""
    return SpaceCheck(needed=db_bytes + HEADROOM_BYTES, free=free)


def check_space(store: Store) -> SpaceCheck:
    return space_needed(store.db_bytes(), shutil.disk_usage(store.path.parent).free)


class Snapshot:
    """One backup: exported into a work directory, streamed as a tar, removed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.work = Path(tempfile.mkdtemp(prefix=".backup-", dir=store.path.parent))
        self.export_dir = self.work / "export"
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def export(self) -> None:
        """EXPORT DATABASE in one read transaction (runs on a worker thread; `interrupt` stops it)."""
        cursor = self.store.conn.cursor()
        with self._lock:
            self._cursor = cursor
        try:
            cursor.execute("BEGIN TRANSACTION")
            quoted = str(self.export_dir).replace("'", "''")
            cursor.execute(f"EXPORT DATABASE '{quoted}' (FORMAT parquet)")
            cursor.execute("COMMIT")
        finally:
            with self._lock:
                self._cursor = None
            cursor.close()

    def interrupt(self) -> None:
        with self._lock:
            if self._cursor is not None:
                self._cursor.interrupt()

    def files(self) -> list[Path]:
        return sorted(p for p in self.export_dir.iterdir() if p.is_file())

    def tar_chunks(self) -> Iterator[bytes]:
        """A ustar/pax stream of the export, one file chunk at a time."""
        for path in self.files():
            info = tarfile.TarInfo(path.name)
            info.size = path.stat().st_size
            info.mtime = int(path.stat().st_mtime)
            info.mode = 0o644
            yield info.tobuf(format=tarfile.PAX_FORMAT)
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    yield chunk
            if info.size % tarfile.BLOCKSIZE:
                yield tarfile.NUL * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE)
        yield tarfile.NUL * (2 * tarfile.BLOCKSIZE)

    def remove(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def fetch(client: IngesterClient, target: Path, token: str, timeout: float) -> list[str]:
    """Ask the running ingester for a snapshot and unpack it into `target` (created, must be empty)."""
    target.mkdir(parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise ValueError(f"backup directory {target} is not empty")
    partial = target / ".cryptoviz-backup.tar.part"
    try:
        with partial.open("wb") as out:
            client.backup(out, token, timeout)
        with tarfile.open(partial) as tar:
            names = safe_extract(tar, target)
    finally:
        partial.unlink(missing_ok=True)
    return sorted(names)


def safe_extract(tar: tarfile.TarFile, target: Path) -> list[str]:
    """Unpack the regular files and directories of `tar` below `target`; refuse anything else.

    `extractall(filter="data")` would do this, but the filter exists only from Python 3.11.4 and
    Debian 12 ships 3.11.2. A snapshot holds nothing but files, so links, devices, absolute names
    and `..` are refused (ValueError) before anything is written.
    """
    root = target.resolve()
    members = tar.getmembers()
    for member in members:
        path = (root / member.name).resolve()
        if not (member.isfile() or member.isdir()) or member.name.startswith("/") or not path.is_relative_to(root):
            raise ValueError(f"backup archive member {member.name!r} is not a plain file below the target")
    for member in members:
        path = root / member.name
        if member.isdir():
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has data
        with source, path.open("wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
    return [m.name for m in members]
