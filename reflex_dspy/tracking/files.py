"""Crash-safe file writes for the run layout and the CLI's outputs.

A reader (another process, the dashboard, a resume after `kill -9`) must never see half a file:
whole files are written to a temp file in the same directory and renamed over the target;
the journal is append-only and a torn last line is dropped on read.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def dumps(data: Any) -> str:
    """The one JSON style of the layout (so the live layout and an export compare byte for byte)."""
    return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` via a temp file and rename: readers see the old file or the new one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    write_atomic(path, dumps(data))


def write_once(path: str | os.PathLike[str], text: str) -> None:
    """Write a file that is never modified afterwards (iteration files, result.json)."""
    if Path(path).exists():
        raise FileExistsError(f"{path} is append-only and already written")
    write_atomic(path, text)


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Lines of an append-only journal; a torn last line (a write cut by `kill -9`) is dropped."""
    if not Path(path).exists():
        return []
    entries = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return entries


def repair_jsonl(path: str | os.PathLike[str]) -> int:
    """Cut a torn last line off a journal before appending to it again; returns the line count."""
    target = Path(path)
    if not target.exists():
        return 0
    data = target.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):
        with open(target, "r+b") as fh:
            fh.truncate(keep)
    return len(read_jsonl(target))
