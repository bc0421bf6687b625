"""`cryptoviz backup` unpacks the ingester's tar the same safe way on every supported Python
(3.11.2 has no `extractall(filter=...)`): plain files only, nothing outside the target."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from cryptoviz.ingester.backup import safe_extract


def archive(tmp_path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    path = tmp_path / "in.tar"
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def test_files_and_directories_are_unpacked_with_their_content(tmp_path: Path) -> None:
    path = archive(
        tmp_path,
        (member("schema.sql"), b"CREATE TABLE t (x INT);"),
        (member("data", tarfile.DIRTYPE), b""),
        (member("data/t.parquet"), b"PAR1"),
    )
    target = tmp_path / "out"
    target.mkdir()
    with tarfile.open(path) as tar:
        names = safe_extract(tar, target)
    assert sorted(names) == ["data", "data/t.parquet", "schema.sql"]
    assert (target / "schema.sql").read_bytes() == b"CREATE TABLE t (x INT);"
    assert (target / "data" / "t.parquet").read_bytes() == b"PAR1"


@pytest.mark.parametrize(
    "hostile",
    [
        member("../escape.sql"),
        member("/etc/escape.sql"),
        member("link.sql", tarfile.SYMTYPE, "/etc/passwd"),
        member("hard.sql", tarfile.LNKTYPE, "schema.sql"),
        member("fifo", tarfile.FIFOTYPE),
    ],
    ids=["dotdot", "absolute", "symlink", "hardlink", "fifo"],
)
def test_anything_but_a_plain_file_below_the_target_is_refused_before_writing(
    tmp_path: Path, hostile: tarfile.TarInfo
) -> None:
    path = archive(tmp_path, (member("schema.sql"), b"ok"), (hostile, b"x"))
    target = tmp_path / "deep" / "out"
    target.mkdir(parents=True)
    with tarfile.open(path) as tar, pytest.raises(ValueError, match="not a plain file"):
        safe_extract(tar, target)
    assert list(target.iterdir()) == []  # nothing was written, not even the good member
    assert not (tmp_path / "deep" / "escape.sql").exists()
