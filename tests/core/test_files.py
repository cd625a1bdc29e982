"""vscen.files: a file is written whole through a private temporary file, or not at all, and
the SHA-256 that proves what vscen made is the standard one."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from vscen import files


def test_a_file_is_written_whole_with_its_mode_and_nothing_beside_it(tmp_path):
    target = tmp_path / "domain.xml"
    target.write_text("old")
    files.atomic_write(target, "<domain/>\n", mode=0o640)
    assert target.read_text() == "<domain/>\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["domain.xml"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    target = tmp_path / "domain.xml"
    target.write_text("old")

    def refuse(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", refuse)
    with pytest.raises(OSError, match="No space"):
        files.atomic_write(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["domain.xml"]


def test_the_temporary_file_is_private_new_and_never_a_symlink_target(tmp_path, monkeypatch):
    fd, name = files._temporary(tmp_path / "x.xml")
    os.close(fd)
    assert os.path.basename(name).startswith(".x.xml.") and stat.S_IMODE(os.stat(name).st_mode) == 0o600
    # a name taken (a file or a planted symlink) is never opened: another one is drawn
    taken = iter([bytes(6), bytes(6), b"\x01" * 6])
    monkeypatch.setattr(os, "urandom", lambda n: next(taken))
    (tmp_path / f".y.xml.{bytes(6).hex()}").symlink_to(tmp_path / "elsewhere")
    fd, name = files._temporary(tmp_path / "y.xml")
    os.close(fd)
    assert name.endswith("010101010101") and not (tmp_path / "elsewhere").exists()


def test_sha256_is_the_standard_digest():
    for data in (b"", b"abc", bytes(range(256)) * 1000):
        digest = files.sha256()
        digest.update(data)
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
