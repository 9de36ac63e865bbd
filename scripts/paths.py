"""What is wrong with a path the user gave the `ccerx` commands, in words (None: nothing)."""
from __future__ import annotations

import os
from pathlib import Path


def input_file_problem(path: Path) -> str | None:
    """A file to read: it must exist and be a file."""
    if path.is_dir():
        return f"{path} is a directory, not a file"
    if not path.exists():
        return f"no such file: {path}"
    return None


def output_file_problem(path: Path, option: str) -> str | None:
    """A file to write (`option` names where the user gave it): its folder must exist and
    be writable, and it must not be a directory itself."""
    folder = path.parent
    if path.is_dir():
        return f"cannot write {option} {path}: it is a directory"
    if not folder.is_dir():
        return (f"cannot write {option} {path}: No such file or directory (there is no "
                f"folder {folder})")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"cannot write {option} {path}: Permission denied"
    return None


def os_error_text(err: OSError) -> str:
    """An OSError in words, the path once: "/x/y: No such file or directory"."""
    if err.filename is not None:
        return f"{err.filename}: {err.strerror or err}"
    return err.strerror or str(err)
