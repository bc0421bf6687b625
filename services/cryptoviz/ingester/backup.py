"""Consistent snapshots while ingest continues.

Only the ingester may open the DuckDB file, so a backup is asked of the running ingester:
`POST /api/v1/admin/backup` runs `EXPORT DATABASE ... (FORMAT parquet)` inside one read
transaction on its own cursor (an MVCC snapshot: commits made meanwhile are not in it, and
the writer is not blocked), tars the directory and streams it; `cryptoviz backup DIR`
unpacks it into DIR. Restore with `IMPORT DATABASE 'DIR'` in a new DuckDB file.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

import requests

from cryptoviz.ingester.store import Store


def snapshot_tar(store: Store) -> Path:
    """Export every table in one transaction next to the database; return a tar of it."""
    work = Path(tempfile.mkdtemp(prefix=".backup-", dir=store.path.parent))
    export_dir = work / "export"
    tar_path = store.path.parent / f"{work.name}.tar"
    try:
        cursor = store.conn.cursor()
        try:
            cursor.execute("BEGIN TRANSACTION")
            quoted = str(export_dir).replace("'", "''")
            cursor.execute(f"EXPORT DATABASE '{quoted}' (FORMAT parquet)")
            cursor.execute("COMMIT")
        finally:
            cursor.close()
        with tarfile.open(tar_path, "w") as tar:
            for item in sorted(export_dir.iterdir()):
                tar.add(item, arcname=item.name)
    except BaseException:
        tar_path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tar_path


def fetch_backup(ingester_url: str, target: Path, timeout: float) -> list[str]:
    """Ask the running ingester for a snapshot and unpack it into `target` (created, must be empty)."""
    target.mkdir(parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise ValueError(f"backup directory {target} is not empty")
    url = ingester_url.rstrip("/") + "/api/v1/admin/backup"
    partial = target / ".cryptoviz-backup.tar.part"
    try:
        with requests.post(url, stream=True, timeout=timeout) as response:
            if response.status_code != 200:
                raise RuntimeError(f"ingester at {ingester_url} answered {response.status_code}: {response.text[:200]}")
            with partial.open("wb") as out:
                for chunk in response.iter_content(1 << 20):
                    out.write(chunk)
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
            shutil.copyfileobj(source, out, 1 << 20)
    return [m.name for m in members]
