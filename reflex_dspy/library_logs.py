"""DSPy's and LiteLLM's log lines during a run: counted, kept off the console, summed up once.

Left alone, DSPy prints "LM response was truncated; increase max_tokens or inspect history." for
every answer that hits its token limit (11 times in one README run), in the middle of our
progress lines, and LiteLLM prints its own warnings the same way. During a run, `captured()`
takes their records instead: warnings and errors are counted by message and become summary
lines ("3 model replies hit the token limit"), the informational chatter is dropped. Python
`warnings.warn` calls made from DSPy or LiteLLM code are counted the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

# DSPy's root logger: its handler writes to stderr and it does not propagate, so its handlers are
# swapped for ours. LiteLLM's three loggers are top-level (no children): a logger filter stops
# their records before any handler, including handlers LiteLLM adds when it is imported mid-run.
DSPY_LOGGER = "dspy"
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")
TRUNCATION_MESSAGE = "LM response was truncated"
_LIBRARY_DIRS = (f"{os.sep}dspy{os.sep}", f"{os.sep}litellm{os.sep}")
_MESSAGE_CHARS = 160


class LibraryLogs(logging.Filter):
    """Counts of the warnings DSPy and LiteLLM raised during a run (thread-safe)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.truncated = 0
        self.messages: Counter[tuple[str, str]] = Counter()  # (source, first line) → count

    def count(self, source: str, message: str) -> None:
        first = next((line.strip() for line in message.splitlines() if line.strip()), "")
        with self._lock:
            if first.startswith(TRUNCATION_MESSAGE):
                self.truncated += 1
            else:
                self.messages[(source, first[:_MESSAGE_CHARS])] += 1

    def filter(self, record: logging.LogRecord) -> bool:
        """A logger filter: count warnings and errors, let nothing through to the console."""
        if record.levelno >= logging.WARNING:
            self.count("LiteLLM" if record.name.startswith("LiteLLM") else "DSPy", record.getMessage())
        return False

    def summary(self) -> list[str]:
        """One line per kind of message, most frequent first: what the run summary shows."""
        lines = []
        if self.truncated:
            replies = "model reply" if self.truncated == 1 else "model replies"
            lines.append(f"{self.truncated} {replies} hit the token limit (max_tokens)")
        for (source, message), n in self.messages.most_common():
            lines.append(f"{source} warned {n}×: {message}" if n > 1 else f"{source} warned: {message}")
        return lines


class _CountingHandler(logging.Handler):
    def __init__(self, logs: LibraryLogs) -> None:
        super().__init__(level=logging.WARNING)
        self.logs = logs

    def emit(self, record: logging.LogRecord) -> None:
        self.logs.filter(record)


def _from_library(filename: str) -> bool:
    return any(part in filename for part in _LIBRARY_DIRS)


@contextlib.contextmanager
def captured() -> Iterator[LibraryLogs]:
    """Within the block, DSPy's and LiteLLM's log records and warnings are counted, not printed.

    Everything is put back on exit. Warnings from other code still reach the console.
    """
    logs = LibraryLogs()
    dspy_logger = logging.getLogger(DSPY_LOGGER)
    saved_handlers = dspy_logger.handlers[:]
    saved_propagate = dspy_logger.propagate
    dspy_logger.handlers = [_CountingHandler(logs)]
    dspy_logger.propagate = False
    litellm_loggers = [logging.getLogger(name) for name in LITELLM_LOGGERS]
    for logger in litellm_loggers:
        logger.addFilter(logs)
    show = warnings.showwarning

    def showwarning(message: Any, category: type[Warning], filename: str, lineno: int, *rest: Any) -> None:
        if _from_library(filename):
            logs.count("DSPy" if f"{os.sep}dspy{os.sep}" in filename else "LiteLLM", str(message))
        else:
            show(message, category, filename, lineno, *rest)

    warnings.showwarning = showwarning
    try:
        yield logs
    except BaseException:
        for line in logs.summary():  # a failed run has no summary: say it here, once
            print(f"note: {line}", file=sys.stderr)
        raise
    finally:
        warnings.showwarning = show
        for logger in litellm_loggers:
            logger.removeFilter(logs)
        dspy_logger.handlers = saved_handlers
        dspy_logger.propagate = saved_propagate
