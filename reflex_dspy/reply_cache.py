"""Keep empty completions out of DSPy's response cache.

DSPy caches a provider's reply before anything reads it, so an HTTP 200 with `content: ""`
would be stored and handed back by every later run (and every retry) without the model being
asked again: one glitch of the provider becomes a permanent 0. The evaluator treats an empty
answer as a failed attempt (`retries.EmptyReply`) and asks again; this guard makes sure the
empty reply was never stored, so asking again really reaches the model.
"""

from __future__ import annotations

from typing import Any

import dspy

_GUARD = "_reflex_skips_empty_replies"


def _text_of(output: Any) -> tuple[str, bool]:
    """(text, has tool calls) of one DSPy output: a string or a dict with "text"/"tool_calls"."""
    if isinstance(output, dict):
        return str(output.get("text") or ""), bool(output.get("tool_calls"))
    return str(output or ""), False


def _choices(record: Any) -> list[Any] | None:
    choices = record.get("choices") if isinstance(record, dict) else getattr(record, "choices", None)
    return list(choices) if isinstance(choices, list | tuple) else None


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def is_empty_reply(record: Any) -> bool:
    """Whether a cache record (DSPy's own format, or a raw chat completion) holds no text at all."""
    if isinstance(record, dict) and "_dspy_format" in record:
        outputs = [_text_of(o) for o in record.get("outputs") or []]
        return bool(outputs) and all(not text.strip() and not tools for text, tools in outputs)
    choices = _choices(record)
    if not choices:
        return False
    for choice in choices:
        message = _field(choice, "message")
        if message is None or str(_field(message, "content") or "").strip() or _field(message, "tool_calls"):
            return False
    return True


def install_empty_reply_guard() -> None:
    """Wrap the current `dspy.cache.put` so empty replies are not stored (idempotent)."""
    cache = dspy.cache
    if cache is None or getattr(cache, _GUARD, False):
        return
    put = cache.put

    def guarded_put(request: dict[str, Any], value: Any, *args: Any, **kwargs: Any) -> None:
        if not is_empty_reply(value):
            put(request, value, *args, **kwargs)

    cache.put = guarded_put
    setattr(cache, _GUARD, True)
