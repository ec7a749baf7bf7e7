"""Output paths checked before a run pays for anything: never an input, always writable.

A run can cost minutes of model calls; an output path that cannot be written (a parent that is
a file, a read-only place like /proc) used to fail only at the end, with a traceback and the
work lost, and an output equal to an input (`-o data.jsonl`) silently overwrote it. Each check
here is one `UsageError` line (exit 2) before any model call. Writability is probed by creating
and removing a temporary file next to the target, so nothing is left behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from reflex_dspy.errors import UsageError


def _same(a: Path, b: Path) -> bool:
    try:
        return a == b or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _probe_dir(flag: str, shown: str, folder: Path) -> None:
    """`folder` exists as a directory and a file can be created in it."""
    if not folder.is_dir():
        raise UsageError(f"{flag} {shown}: {folder} is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".reflex-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {shown}: cannot write in {folder} ({exc.strerror or exc})") from None


def check_output_file(flag: str, path: str, inputs: Iterable[tuple[str, str | None]] = ()) -> None:
    """`path` is a writable file path that is none of `inputs` ((label, path) pairs)."""
    target = Path(path).expanduser().resolve()
    for label, given in inputs:
        if given and _same(target, Path(given).expanduser().resolve()):
            raise UsageError(f"{flag} {path}: is the {label}; an output never overwrites an input")
    if target.is_dir():
        raise UsageError(f"{flag} {path}: is a directory, expected a file path")
    parent = target.parent
    if not parent.exists():
        blocker = _nearest_existing(parent)
        if not blocker.is_dir():
            raise UsageError(f"{flag} {path}: {blocker} is a file, not a directory")
        raise UsageError(f"{flag} {path}: directory {Path(path).parent} does not exist")
    _probe_dir(flag, path, parent)
    if target.exists() and not os.access(target, os.W_OK):
        raise UsageError(f"{flag} {path}: the file is not writable")


def check_output_dir(flag: str, path: str) -> None:
    """`path` is (or can be created as) a writable directory: no file in the way, not read-only."""
    target = Path(path).expanduser().resolve()
    existing = _nearest_existing(target)
    if existing == target and not target.is_dir():
        raise UsageError(f"{flag} {path}: is a file, expected a directory")
    if not existing.is_dir():
        raise UsageError(f"{flag} {path}: {existing} is a file, not a directory")
    _probe_dir(flag, path, existing)


def check_outputs(outputs: Iterable[tuple[str, str | None]], inputs: Iterable[tuple[str, str | None]]) -> None:
    """Every (flag, path) output is writable, distinct from the others and from every input."""
    inputs = [(label, p) for label, p in inputs if p]
    seen: list[tuple[str, str]] = []
    for flag, path in outputs:
        if not path:
            continue
        check_output_file(flag, path, [*inputs, *((f"{f} output", p) for f, p in seen)])
        seen.append((flag, path))
