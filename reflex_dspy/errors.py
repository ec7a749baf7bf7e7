"""Errors the user can act on. The CLI turns `UsageError` into one line and exit code 2."""


class ReflexError(Exception):
    """Base class for reflex_dspy errors."""


class UsageError(ReflexError, ValueError):
    """Bad input: a file, line, field or value the user must fix. One line, names the culprit."""


class MetricError(ReflexError):
    """The metric raised (not a `MetricFailure`, not a provider's transient error): a bug in the
    metric or the data it reads. The run stops, naming the example; the metric's error is the cause."""


class ProviderAuthError(ReflexError):
    """The provider refused our credentials (401/403): retrying cannot help, the run stops."""


class ProviderUnavailable(ReflexError):
    """A model failed many examples in a row after retries (connection errors, 5xx, timeouts): the
    provider is down, and a search step decided on failures would be no step at all. The run
    stops (status `failed`, its record complete so far) and resumes when the provider answers."""


class BudgetExhausted(ReflexError):
    """The metric-call budget is spent; the search stops and the run finishes with what it has.

    `stop_reason`, where given, is what the run reports instead of "metric-call budget spent":
    a strategy that stops with calls left (too few for its next step) says so.
    """

    def __init__(self, message: str, stop_reason: str | None = None) -> None:
        super().__init__(message)
        self.stop_reason = stop_reason
