"""Provider errors: which ones to retry (with backoff), which stop the run, which fail an example."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, NamedTuple


class EmptyReply(Exception):  # noqa: N818 (reads as what happened, like DSPy's own errors)
    """The provider answered HTTP 200 with no text: not an answer, so never scored (it would be a 0).

    Transient: the request is asked again, and after the last attempt the example is failed.
    """


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for transient provider errors.

    This is the one retry layer: models are built with DSPy's `num_retries=0` (lm.py), so each
    attempt here is one HTTP request, and each retry is counted and seen by the throttle.
    """

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0

    def delay(self, attempt: int, rng: random.Random, exc: BaseException | None = None) -> float:
        """The provider's `Retry-After` when it gave one (capped), else jittered exponential backoff."""
        hint = retry_after(exc) if exc is not None else None
        if hint is not None:
            return min(self.max_delay, hint)
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


def retry_after(exc: BaseException) -> float | None:
    """The `Retry-After` seconds a provider error carries (DSPy exposes it as `retry_after`), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        hint = getattr(exc, "retry_after", None)
        if isinstance(hint, int | float) and not isinstance(hint, bool) and 0 <= hint < float("inf"):
            return float(hint)
        exc = exc.__cause__ or exc.__context__
    return None


_TRANSIENT_NAMES = ("RateLimit", "Timeout", "ServiceUnavailable", "InternalServer", "APIConnection", "Transport")
_AUTH_NAMES = ("Authentication", "PermissionDenied", "AuthError", "Billing")


def classify_error(exc: BaseException) -> str:
    """'auth' (stop the run), 'transient' (retry) or 'fatal' (record the example as failed).

    Walks the cause chain because DSPy and litellm wrap provider errors in their own types.
    """
    from dspy.utils.exceptions import LMAuthError, LMBillingError, is_retryable_lm_error

    if no_answer(exc):  # the prompt's outcome, not the provider's: asking again cannot help
        return "fatal"
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, EmptyReply):
            return "transient"
        if (reported := getattr(exc, "reported", None)) and reported["kind"] != "fatal":  # see `report`
            return reported["kind"]
        if isinstance(exc, LMAuthError | LMBillingError):
            return "auth"
        if is_retryable_lm_error(exc):
            return "transient"
        status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
        if status in (401, 403):
            return "auth"
        if status == 429 or status == 408 or (isinstance(status, int) and status >= 500):
            return "transient"
        name = type(exc).__name__
        if any(n in name for n in _AUTH_NAMES):
            return "auth"
        if any(n in name for n in _TRANSIENT_NAMES) or isinstance(exc, TimeoutError | ConnectionError):
            return "transient"
        exc = exc.__cause__ or exc.__context__
    return "fatal"


class NoAnswer(NamedTuple):
    """How the reports say why a candidate has no answer for an example (`no_answer`)."""

    counted: str  # after a count in a measurement: "3 over the model's context window"
    reason: str  # in the reasoning model's feedback and the summary's warning
    hint: str  # what the user can do about it


NO_ANSWER = {
    "too_long": NoAnswer("over the model's context window",
                         "the request was longer than the task model's context window",
                         "shorter instructions or fewer demos fit"),
    "unreadable": NoAnswer("unreadable replies", "the model's reply could not be read as the program's output fields",
                           "the examples' errors quote the replies"),
}


def no_answer(exc: BaseException) -> str | None:
    """Why this error means the candidate has no answer for this input, else None.

    "too_long": the request was over the model's context window (DSPy's
    `ContextWindowExceededError`, llama.cpp's and litellm's own); "unreadable": the model replied
    but DSPy's adapter could not read the program's output fields from it (`AdapterParseError`).
    Neither is the provider's doing: the same prompt gets the same outcome, so asking again cannot help.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if (reported := getattr(exc, "reported", None)) and reported["no_answer"]:  # see `report`
            return reported["no_answer"]
        name = type(exc).__name__
        if name in ("ContextWindowExceededError", "ContextLengthError"):
            return "too_long"
        if name == "AdapterParseError":
            return "unreadable"
        exc = exc.__cause__ or exc.__context__
    return None


def short_error(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` on one line, credentials redacted: the form every recorded error text takes."""
    from reflex_dspy.tracking.redact import redact_text

    text = redact_text(" ".join(str(exc).split())) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:limit]}"


def is_rate_limit(exc: BaseException) -> bool:
    """Whether the provider said "slow down" (HTTP 429), anywhere in the cause chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
        if status == 429 or "RateLimit" in type(exc).__name__ or (getattr(exc, "reported", None) or {}).get("rate_limit"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def report(exc: BaseException) -> dict[str, Any]:
    """What this module makes of an error, for one raised in another process (a pipeline worker),
    where only its text crosses: the error raised here in its place carries this as `reported`,
    and `classify_error`, `no_answer` and `is_rate_limit` read it, so the call is treated as the
    same call in a thread would be."""
    return {"kind": classify_error(exc), "no_answer": no_answer(exc), "rate_limit": is_rate_limit(exc)}
