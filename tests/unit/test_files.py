"""engine/durable/files.py: the one atomic write and the private modes, whatever the umask."""
from __future__ import annotations

import os
import stat

import pytest

from ccerx.engine.durable.files import (open_private, private_dir, private_opener, private_sqlite,
                                        write_atomic)


@pytest.fixture(params=[0o022, 0o000, 0o077], ids=lambda u: f"umask{u:03o}")
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_atomic_leaves_only_the_file_0600(tmp_path, umask):
    target = tmp_path / "state.json"
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert mode(target) == 0o600
    assert os.listdir(tmp_path) == ["state.json"]      # no temporary file left behind


def test_write_atomic_tightens_a_file_that_was_readable_by_all(tmp_path, umask):
    target = tmp_path / "opening.json"
    target.write_bytes(b"old")
    os.chmod(target, 0o644)
    write_atomic(target, b"new")
    assert mode(target) == 0o600 and target.read_bytes() == b"new"


def test_a_failed_write_atomic_keeps_the_old_content_and_no_temp(tmp_path):
    target = tmp_path / "cursor"
    write_atomic(target, b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")        # fails after the temporary file exists
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["cursor"]


def test_private_dir_makes_every_missing_directory_0700(tmp_path, umask):
    leaf = private_dir(tmp_path / "a" / "b" / "c")
    for directory in (tmp_path / "a", tmp_path / "a" / "b", leaf):
        assert mode(directory) == 0o700
    os.chmod(leaf, 0o755)
    private_dir(leaf)                            # an existing data directory is tightened
    assert mode(leaf) == 0o700


def test_private_dir_refuses_a_file(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        private_dir(tmp_path / "f")


def test_private_files_are_0600(tmp_path, umask):
    fd = open_private(tmp_path / "seg.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    os.close(fd)
    with open(tmp_path / "store.body", "ab", opener=private_opener) as fh:
        fh.write(b"x")
    old = tmp_path / "old.index"
    old.write_bytes(b"")
    os.chmod(old, 0o644)
    with open(old, "ab", opener=private_opener):
        pass
    db = private_sqlite(tmp_path / "ledger.sqlite")
    for name in ("seg.log", "store.body", "old.index", db.name):
        assert mode(tmp_path / name) == 0o600, name
