"""Temporary siblings: named after their host and process, and removed by the next write to the same
target once that process has ended (and only then)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from augmentor.atomic import remove_stale_siblings, replace_directory, sibling_path, temporary_path


def ended_process_id() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporaries_of_ended_processes_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "out.h5"
    mine = sibling_path(target)
    mine.write_bytes(b"in progress")
    assert mine.name.startswith(".out.h5.") and mine.name.endswith(".tmp") and f"-{os.getpid()}-" in mine.name
    host = mine.name[len(".out.h5.") :].split(f"-{os.getpid()}-")[0]
    dead = ended_process_id()
    stale_file = tmp_path / f".out.h5.{host}-{dead}-0123abcd.tmp"
    stale_folder = tmp_path / f".out.h5.{host}-{dead}-89abcdef.old"
    older_name = tmp_path / f".out.h5.{dead}-deadbeef.tmp"  # written before names carried the host
    other_host = tmp_path / f".out.h5.elsewhere-{dead}-0123abcd.tmp"  # a shared folder: never touched
    other_target = tmp_path / f".other.h5.{host}-{dead}-0123abcd.tmp"
    unrelated = tmp_path / ".out.h5.notes.tmp"
    for path in (stale_file, older_name, other_host, other_target, unrelated):
        path.write_bytes(b"x")
    stale_folder.mkdir()
    (stale_folder / "report.json").write_text("{}")

    fresh = temporary_path(target)  # starting a write cleans up first
    assert not fresh.exists() and fresh.parent == tmp_path
    assert not stale_file.exists() and not stale_folder.exists() and not older_name.exists()
    assert mine.exists() and other_host.exists() and other_target.exists() and unrelated.exists()


def test_a_reused_process_id_does_not_keep_a_temporary_alive(tmp_path: Path) -> None:
    target = tmp_path / "out.h5"
    left = sibling_path(target)  # this process's id, but written "a day before this process started"
    left.write_bytes(b"x")
    day_ago = time.time() - 86400
    os.utime(left, (day_ago, day_ago))
    assert remove_stale_siblings(target) == [left]


def test_replace_directory_swaps_in_the_new_folder(tmp_path: Path) -> None:
    final = tmp_path / "report"
    final.mkdir()
    (final / "old.txt").write_text("old")
    staging = temporary_path(final)
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    replace_directory(staging, final)
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
