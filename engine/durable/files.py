"""Private, crash-safe files: the one home for how durable state reaches the disk.

Everything the exchange keeps (journal, snapshots, cursors, statements, FIX message stores,
the SQLite ledger, opening.json) holds orders, balances and broker identities, so it is
private to the user running the exchange: directories 0700, files 0600, whatever the umask.
Modes are set explicitly with chmod/fchmod after creation, because a mode given to open() or
mkdir() is only an upper bound that the umask narrows further.

    private_dir(path)               create (with missing parents) a 0700 directory
    open_private(path, flags)       os.open() a 0600 file; returns the fd
    private_opener                  the same as an `opener=` for the builtin open()
    write_atomic(path, data)        all of `data` or the old content, never a mix, after a crash
    fsync_dir(path)                 make a directory's entries (creates, renames) durable
    private_sqlite(path)            a SQLite database file created 0600 before sqlite opens it
    make_private(*paths)            chmod 0600 each path that exists (SQLite's -wal and -shm)
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path) -> Path:
    """Create directory `path` and any missing parents with mode 0700 (each one this call
    creates; an existing `path` itself is also set to 0700). Returns the Path."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(DIR_MODE)
        except FileExistsError:
            continue          # made meanwhile by another thread or process: not ours to chmod
        os.chmod(directory, DIR_MODE)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")
    if path.stat().st_mode & 0o777 != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def open_private(path, flags: int) -> int:
    """os.open(path, flags) with mode 0600 set explicitly (also on an existing file)."""
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_opener(path, flags: int) -> int:
    """For `open(path, mode, opener=private_opener)`: the file is 0600."""
    return open_private(path, flags)


def fsync_dir(path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path, data, mode: int = FILE_MODE) -> None:
    """Replace `path` by `data` (bytes, or a list/tuple of bytes written one after the other,
    to spare joining a large payload to its header) so that a crash leaves either the old or
    the new content: write a temporary file in the same directory, fsync it, rename it over
    `path`, fsync the directory (without that the rename itself may not survive a power
    loss). The file gets `mode` (0600 by default); on any error the temporary file is
    removed."""
    path = Path(path)
    chunks = data if isinstance(data, (list, tuple)) else (data,)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def make_private(*paths) -> None:
    """chmod 0600 each of `paths` that exists."""
    for path in paths:
        try:
            os.chmod(path, FILE_MODE)
        except FileNotFoundError:
            pass


def private_sqlite(path) -> Path:
    """Create the SQLite database file `path` empty and 0600 unless it exists (sqlite would
    create it 0644, and gives its -wal and -shm files the database file's mode), and make an
    existing one and its -wal/-shm 0600. Call before sqlite3.connect(), and make_private on
    sqlite_companions(path) after the database is in WAL mode."""
    path = Path(path)
    os.close(open_private(path, os.O_RDWR | os.O_CREAT))
    make_private(*sqlite_companions(path))
    return path


def sqlite_companions(path) -> tuple[Path, ...]:
    """The database file and the files SQLite keeps beside it."""
    path = Path(path)
    return (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"),
            path.with_name(path.name + "-journal"))
