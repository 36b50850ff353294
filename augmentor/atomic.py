"""Atomic outputs: every file or folder is written as a hidden sibling, then renamed onto its final path.

A temporary sibling of ``out.h5`` is named ``.out.h5.<host>-<pid>-<random>.tmp`` (a folder being
replaced is first moved aside as ``... .old``). The host and process id say who owns it: a process
killed with ``kill -9`` (or a machine that lost power) cannot delete its own temporary, so every
write to ``out.h5`` starts by deleting the siblings whose owner no longer runs on this host — and
only those, so a concurrent write to the same target from another live process is left alone.
Siblings made by another host (a shared network folder) are never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
from pathlib import Path

import psutil

TEMPORARY = "tmp"
DISCARDED = "old"
# Seconds of clock slack when telling a reused process id from the owner of a temporary.
_PID_REUSE_SLACK_S = 2.0


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname() or "localhost")[:64]


def sibling_path(final: str | Path, kind: str = TEMPORARY) -> Path:
    """A hidden, unique sibling of ``final`` owned by this process (``kind``: "tmp" or "old")."""
    target = Path(final)
    return target.with_name(f".{target.name}.{_host()}-{os.getpid()}-{secrets.token_hex(4)}.{kind}")


def _owner_is_gone(pid: int, modified: float) -> bool:
    """Whether the process that made a sibling (last written at ``modified``) has ended."""
    try:
        process = psutil.Process(pid)
        # The id may have been reused by a process started after the sibling was last written.
        return process.create_time() > modified + _PID_REUSE_SLACK_S
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # access denied, zombie: assume it is alive
        return False


def remove_stale_siblings(final: str | Path) -> list[Path]:
    """Delete the temporaries (and moved-aside folders) of ``final`` left by processes that have ended.

    Also recognises the older ``.NAME.<pid>-<random>.tmp`` names (no host), as made on this host.

    Returns:
        The paths removed.
    """
    target = Path(final)
    pattern = re.compile(
        rf"^\.{re.escape(target.name)}\.(?:(?P<host>[A-Za-z0-9_.]+)-)?(?P<pid>\d+)-[0-9a-f]{{8}}\.(?:{TEMPORARY}|{DISCARDED})$"
    )
    host = _host()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or match["host"] not in (None, host):
            continue
        try:
            modified = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if not _owner_is_gone(int(match["pid"]), modified):
            continue
        path = Path(entry.path)
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


def temporary_path(final: str | Path) -> Path:
    """Where to write ``final`` before renaming it into place; removes stale temporaries of ``final`` first."""
    remove_stale_siblings(final)
    return sibling_path(final, TEMPORARY)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary sibling, then rename it onto ``path`` (usual permissions, umask applies)."""
    temporary = temporary_path(path)
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def replace_directory(temporary: Path, final: Path) -> None:
    """Move the finished folder ``temporary`` onto ``final``; an old ``final`` is moved aside first and deleted last."""
    old = None
    if final.exists():
        old = sibling_path(final, DISCARDED)
        os.replace(final, old)
    try:
        os.replace(temporary, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
