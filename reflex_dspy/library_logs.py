"""DSPy's and LiteLLM's log lines during a run: counted, kept off the console, summed up once.

Left alone, DSPy prints "LM response was truncated; increase max_tokens or inspect history." for
every answer that hits its token limit (11 times in one README run), in the middle of our
progress lines, and LiteLLM prints its own warnings the same way. During a run, `captured()`
takes their records instead: warnings and errors are counted by message and become summary
lines ("3 model replies hit the token limit"), the informational chatter is dropped. Python
`warnings.warn` calls made from DSPy or LiteLLM code are counted the same way. What DSPy prints
itself (GEPA's progress bars) is dropped within `quiet_output()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

# DSPy's root logger: its handler writes to stderr and it does not propagate, so its handlers are
# swapped for ours. LiteLLM's three loggers are top-level (no children): a logger filter stops
# their records before any handler, including handlers LiteLLM adds when it is imported mid-run.
DSPY_LOGGER = "dspy"
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")
TRUNCATION_MESSAGE = "LM response was truncated"
_LIBRARY_DIRS = (f"{os.sep}dspy{os.sep}", f"{os.sep}litellm{os.sep}")
_MESSAGE_CHARS = 160


class LibraryLogs:
    """Counts of the warnings DSPy and LiteLLM raised during a run (thread-safe)."""

    def __init__(self) -> None:
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

    def take(self, record: logging.LogRecord) -> None:
        """Count a warning or error record (the informational chatter is dropped)."""
        if record.levelno >= logging.WARNING:
            self.count("LiteLLM" if record.name.startswith("LiteLLM") else "DSPy", record.getMessage())

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
    """DSPy's logger's one handler while runs go on: each record goes to the runs it belongs to."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        for logs in _owners():
            logs.take(record)


class _CountingFilter(logging.Filter):
    """LiteLLM's loggers' filter while runs go on: counted by the runs it belongs to, never printed."""

    def filter(self, record: logging.LogRecord) -> bool:
        for logs in _owners():
            logs.take(record)
        return False


def _from_library(filename: str) -> bool:
    return any(part in filename for part in _LIBRARY_DIRS)


# Runs can overlap (a user's threads): the loggers and `warnings.showwarning` are taken over once,
# by the first run, and put back by the last, so no run can restore another's state (which left
# DSPy's log lines swallowed for the rest of the process). A record belongs to the run whose
# threads made it (`_current`, carried into the run's pools by `worker_pool`); one from a thread
# no run started is counted by every run going on.
_lock = threading.Lock()
_active: list[LibraryLogs] = []
_restore: list[Callable[[], None]] = []
_current: ContextVar[LibraryLogs | None] = ContextVar("reflex_library_logs", default=None)


def _owners() -> list[LibraryLogs]:
    mine = _current.get()
    with _lock:
        return [mine] if mine is not None and mine in _active else list(_active)


def _take_over() -> None:
    """Put DSPy's and LiteLLM's output in our hands (the first run); `_restore` undoes it."""
    dspy_logger = logging.getLogger(DSPY_LOGGER)
    saved_handlers, saved_propagate = dspy_logger.handlers[:], dspy_logger.propagate
    dspy_logger.handlers, dspy_logger.propagate = [_CountingHandler()], False
    counting = _CountingFilter()
    litellm_loggers = [logging.getLogger(name) for name in LITELLM_LOGGERS]
    for logger in litellm_loggers:
        logger.addFilter(counting)
    show = warnings.showwarning

    def showwarning(message: Any, category: type[Warning], filename: str, lineno: int, *rest: Any) -> None:
        if not _from_library(filename):
            show(message, category, filename, lineno, *rest)
            return
        for logs in _owners():
            logs.count("DSPy" if f"{os.sep}dspy{os.sep}" in filename else "LiteLLM", str(message))

    warnings.showwarning = showwarning

    def restore() -> None:
        warnings.showwarning = show
        for logger in litellm_loggers:
            logger.removeFilter(counting)
        dspy_logger.handlers, dspy_logger.propagate = saved_handlers, saved_propagate

    _restore.append(restore)


def worker_pool(max_workers: int, thread_name_prefix: str) -> ThreadPoolExecutor:
    """A thread pool whose threads' DSPy and LiteLLM records count toward the run that made it."""
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=thread_name_prefix,
                              initializer=_current.set, initargs=(_current.get(),))


@contextlib.contextmanager
def captured() -> Iterator[LibraryLogs]:
    """Within the block, DSPy's and LiteLLM's log records and warnings are counted, not printed.

    Everything is put back when the last run going on leaves. Warnings from other code still reach
    the console.
    """
    logs = LibraryLogs()
    with _lock:
        if not _active:
            _take_over()
        _active.append(logs)
    token = _current.set(logs)
    try:
        yield logs
    except BaseException:
        for line in logs.summary():  # a failed run has no summary: say it here, once
            print(f"note: {line}", file=sys.stderr)
        raise
    finally:
        _current.reset(token)
        with _lock:
            _active.remove(logs)
            if not _active:
                _restore.pop()()


class _QuietStream:
    """sys.stdout or sys.stderr while a `quiet_output` block runs: what its DSPy context prints (in
    any thread DSPy starts for it) is dropped, everyone else's passes. Rich consoles (the run's
    progress) write past it, as past Rich's own proxy."""

    def __init__(self, stream: Any) -> None:
        self.rich_proxied_file = stream

    def write(self, text: str) -> int:
        import dspy

        if dspy.settings.get(QUIET_KEY):
            return len(text)
        return self.rich_proxied_file.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rich_proxied_file, name)


QUIET_KEY = "reflex_quiet_output"  # a DSPy context key: DSPy's thread pools carry it to their threads
_quiet_blocks = 0


@contextlib.contextmanager
def quiet_output() -> Iterator[None]:
    """What DSPy prints within the block is dropped. DSPy's GEPA draws tqdm bars (its engine's and
    `bootstrap_trace_data`'s Evaluate, both hard-wired on, the latter on stdout, from DSPy's worker
    threads) that would land between the run's progress lines and in the user's stdout."""
    import dspy

    global _quiet_blocks
    with _lock:
        if not _quiet_blocks:
            sys.stdout, sys.stderr = _QuietStream(sys.stdout), _QuietStream(sys.stderr)
        _quiet_blocks += 1
    try:
        with dspy.context(**{QUIET_KEY: True}):
            yield
    finally:
        with _lock:
            _quiet_blocks -= 1
            if not _quiet_blocks:
                for name in ("stdout", "stderr"):
                    stream = getattr(sys, name)
                    if isinstance(stream, _QuietStream):  # not if someone replaced it meanwhile
                        setattr(sys, name, stream.rich_proxied_file)
