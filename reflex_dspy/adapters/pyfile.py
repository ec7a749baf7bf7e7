"""Importing a user's Python file as a module, with errors that name the file and the line.

A leaf below both pipeline adapters: `pipeline_file` imports pipeline files with it, and
`pipeline_fn`'s worker processes re-import the main script's file with it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from reflex_dspy.errors import UsageError

__all__ = ["failing_line", "import_file", "one_line"]


def import_file(path: str | Path) -> ModuleType:
    """Import the Python file at `path` as a module (cached per resolved path).

    Errors become one `UsageError` line naming the file and the line that failed.
    """
    file = Path(path).resolve()
    if not file.is_file():
        raise UsageError(f"{path}: no such pipeline file")
    name = "reflex_pipeline_" + hashlib.sha1(str(file).encode()).hexdigest()[:10]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: cannot be imported as Python (expected a .py file)")
    module = importlib.util.module_from_spec(spec)
    if str(file.parent) not in sys.path:
        sys.path.insert(0, str(file.parent))  # its sibling modules import as when it is run directly
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        del sys.modules[name]
        raise
    except BaseException as exc:  # SystemExit included: a file that exits on import cannot be used
        del sys.modules[name]
        raise UsageError(
            f"{path}:{failing_line(exc, file)}: importing it failed: {one_line(exc)}"
        ) from None
    return module


def failing_line(exc: BaseException, file: Path) -> str:
    if isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename).resolve() == file:
        return str(exc.lineno or "?")
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == file]
    return str(frames[-1].lineno) if frames else "?"


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
