"""A llama.cpp model as a dspy 3.4 custom LM engine: `complete(Request) -> Response`.

llama.cpp runs in-process through `xllamacpp`, a prebuilt CPU wheel (no compiler at install
time). Its `Server` object is llama.cpp's own OpenAI-style server loop: requests go straight to
`handle_chat_completions(dict)`, several at once when the model has several slots, and a JSON
schema in `response_format` becomes a grammar, so replies to DSPy's `JSONAdapter` always parse.

One model is loaded per (file, context size) per process and shared by every engine that names
it (with the slot count of the engine that loaded it): the task and reasoning models are often
the same embedded model. `xllamacpp` is imported only
when a model loads.
"""

from __future__ import annotations

import atexit
import itertools
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspy import lm15

from reflex_dspy.errors import UsageError
from reflex_dspy.model_files import INSTALL_HINT, check_gguf, embedded_model_path

# Engine defaults. Greedy decoding makes runs reproducible. 256 tokens is ample for the short
# answers a 0.5B CPU model is given, and bounds one that loops: a bad prompt makes it repeat
# itself to the limit, at ~40 tokens/s, on every example (the reasoning model asks for more).
DEFAULT_N_CTX = 4096
DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.0
DEFAULT_SEED = 1234
# Parallel slots pay off only when each slot's matrix work has cores to run on: see
# docs/benchmarks.md ("Embedded engine"). Below this many CPUs the model decodes one request at a time.
MIN_CPUS_PER_SLOT = 2
MAX_SLOTS = 4
SLOTS_ENV = "REFLEX_DSPY_SLOTS"  # overrides the default slot count (the CLI has no flag for it)
PROMPT_CACHE_ENV = "REFLEX_DSPY_PROMPT_CACHE"  # "0": every prompt computed afresh (see prompt_cache)


@dataclass
class _LoadedModel:
    server: Any  # xllamacpp.Server, or a stand-in with handle_chat_completions(dict) -> dict
    load_seconds: float
    slots: int = 1
    # At temperature > 0 with no seed, call k samples with seed DEFAULT_SEED + k: repeated samples
    # differ, yet a fresh process replays the same sequence.
    seeds: Iterator[int] = field(default_factory=lambda: itertools.count(DEFAULT_SEED))
    socket_dir: str | None = None


# One loaded model per (path, n_ctx) per process: the task model and the reflection model are
# often the same embedded model, and 0.5B parameters must not sit in memory twice.
_MODELS: dict[tuple[str, int], _LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def _close_models() -> None:
    """Stop the server loops before interpreter teardown, so their threads never outlive Python."""
    for loaded in _MODELS.values():
        loaded.server = None
        if loaded.socket_dir:
            shutil.rmtree(loaded.socket_dir, ignore_errors=True)
    _MODELS.clear()


def _import_xllamacpp() -> Any:
    try:
        import xllamacpp
    except ImportError as exc:
        raise lm15.ConfigurationError(f"xllamacpp is not installed ({exc}): {INSTALL_HINT}") from None
    return xllamacpp


def _text_of(parts: Sequence[Any], where: str) -> str:
    """Text parts joined as `Message.text` joins them; the engine has no way to show anything else."""
    texts = []
    for part in parts:
        if isinstance(part, lm15.TextPart):
            texts.append(part.text)
        elif isinstance(part, lm15.ThinkingPart):
            continue  # earlier reasoning is not replayed to a model that has no thinking channel
        else:
            raise lm15.UnsupportedFeatureError(
                f"the embedded model reads text only; {where} holds a {type(part).__name__}",
                feature=getattr(part, "type", None),
            )
    return "\n".join(texts)


def _chat_messages(request: lm15.Request) -> list[dict[str, str]]:
    messages = []
    if request.system is not None:
        system = (
            request.system
            if isinstance(request.system, str)
            else _text_of(request.system, "the system prompt")
        )
        messages.append({"role": "system", "content": system})
    for i, message in enumerate(request.messages):
        if message.role == "tool":
            raise lm15.UnsupportedFeatureError("the embedded model does not call tools", feature="tools")
        # developer = instructions: the chat templates of these models know only `system`.
        role = "system" if message.role == "developer" else message.role
        messages.append({"role": role, "content": _text_of(message.parts, f"message {i}")})
    return messages


def _server_response_format(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """lm15's canonical response_format → the OpenAI spelling llama.cpp's server compiles to a grammar.

    Without a schema the server constrains the reply to any JSON object.
    """
    if response_format is None:
        return None
    if response_format.get("type") == "json_schema" and response_format.get("schema") is not None:
        return {
            "type": "json_schema",
            "json_schema": {"name": response_format.get("name") or "output", "schema": response_format["schema"]},
        }
    return {"type": "json_object"}


def _default_threads() -> int:
    """The CPUs this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_slots(threads: int | None = None) -> int:
    """How many requests the model decodes at once when the caller does not say.

    `$REFLEX_DSPY_SLOTS` if set; else one slot per MIN_CPUS_PER_SLOT CPUs, at most MAX_SLOTS: an
    8-core machine gets four, a 2-core machine one. One slot keeps greedy answers reproducible: with
    several, an answer's last logit digits depend on which requests shared its batch (4 of 20
    answers changed in our test). A second slot does raise throughput on 2 cores too (decoding is
    memory-bound; docs/benchmarks.md), so `REFLEX_DSPY_SLOTS=2` trades that reproducibility for speed.
    """
    override = os.environ.get(SLOTS_ENV, "").strip()
    if override:
        if not override.isdigit() or int(override) < 1:
            raise UsageError(f"{SLOTS_ENV} must be a whole number of slots ≥ 1, got {override!r}")
        return int(override)
    cpus = threads or _default_threads()
    return max(1, min(MAX_SLOTS, cpus // MIN_CPUS_PER_SLOT))


def prompt_cache() -> bool:
    """Whether llama.cpp may reuse the prompt prefix a request shares with the one before it.

    On (the default), a request computes only the tokens after the shared prefix: the same calls
    took half the time or less (docs/benchmarks.md, "Prompt cache"). But the reused tokens were
    computed in another batch than a whole prompt's, and a near-tie answer can then flip with the
    request before it: on the bench's routing task one of 16 answers of the same prompt did
    (llama.cpp's server documents this for `cache_prompt`). `$REFLEX_DSPY_PROMPT_CACHE=0` computes
    every prompt afresh, so an answer depends on its own request only, whatever the call order.
    """
    value = os.environ.get(PROMPT_CACHE_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise UsageError(f"{PROMPT_CACHE_ENV} must be 0 (compute every prompt afresh) or 1, got {value!r}")
    return value != "0"


def _server_params(xllamacpp: Any, engine: LlamaCppEngine, slots: int, socket_dir: str) -> Any:
    """llama.cpp's server settings for this engine.

    The server always opens an HTTP listener: it goes to a Unix socket in a private 0700 temp dir,
    behind a random API key that nothing stores, so no other process or user can reach the model.
    """
    params = xllamacpp.CommonParams()
    params.model.path = engine.model_path
    params.n_parallel = slots
    params.n_ctx = engine.n_ctx * slots  # the context is split between slots: each gets n_ctx
    threads = engine.n_threads or _default_threads()
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.sampling.seed = engine.seed
    params.verbosity = -1  # llama.cpp's log lines would interleave with our progress lines
    params.hostnames = [os.path.join(socket_dir, "llama.sock")]
    params.api_keys = [secrets.token_hex(16)]
    params.ui = False
    params.endpoint_slots = False
    if engine.extra_buffers is False:
        params.no_extra_bufts = True
    return params


def _error_of(result: dict[str, Any]) -> lm15.LM15Error | None:
    """The server's error reply ({"error": {...}} or a bare {"code", "message"}) as an lm15 error."""
    error = result.get("error") if isinstance(result.get("error"), dict) else None
    if error is None and "choices" not in result and "message" in result:
        error = result
    if error is None:
        return None
    message = str(error.get("message") or error)
    if error.get("type") == "exceed_context_size_error" or "context size" in message:
        return lm15.ContextLengthError(message, provider="llama.cpp")
    if int(error.get("code") or 500) >= 500:
        return lm15.ServerError(message, provider="llama.cpp")
    return lm15.InvalidRequestError(message, provider="llama.cpp")


class LlamaCppEngine:
    """A dspy 3.4 custom engine: `complete(Request) -> Response` with an in-process llama.cpp model.

    Holds only plain settings (it is deep-copied and saved with programs); the model is loaded on
    first use into a process-wide cache shared by every engine on the same file. The server loop
    is thread-safe: DSPy's evaluation threads submit requests directly, and llama.cpp decodes up
    to `n_parallel` of them together in one batch (the rest wait in its queue). A generation is
    deterministic at temperature 0 with one slot; at higher temperatures the sampling seed
    advances from `seed` call after call, so repeated samples differ.
    """

    # JSONAdapter sends a JSON schema only when the engine declares both of these; the schema
    # becomes a grammar, so structured outputs always parse, even from a 135M model.
    supports_response_schema = True
    supported_params = frozenset(
        {
            "temperature",
            "max_tokens",
            "top_p",
            "top_k",
            "stop",
            "seed",
            "response_format",
            "frequency_penalty",
            "presence_penalty",
        }
    )

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        embedded: str | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int | None = None,
        n_parallel: int | None = None,
        seed: int = DEFAULT_SEED,
        temperature: float = DEFAULT_TEMPERATURE,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        extra_buffers: bool | None = None,
    ):
        """`embedded` names the built-in model the file came from, so a saved program records the
        name ("qwen") rather than this machine's cache path. `n_parallel` is how many requests
        decode at once (None: `default_slots()`, from the CPUs). `extra_buffers=False` turns off
        llama.cpp's weight-repacking buffers (kept from the source-built engine's AMX workaround)."""
        self.model_path = str(model_path)
        self.embedded = embedded
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_parallel = n_parallel
        self.seed = seed
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_buffers = extra_buffers
        self.prompt_cache = prompt_cache()  # the process's setting, checked now; not saved with the program

    def load(self) -> _LoadedModel:
        """The shared loaded model, loading it now if this process has not yet."""
        key = (self.model_path, self.n_ctx)
        loaded = _MODELS.get(key)
        if loaded is not None:
            return loaded
        with _MODELS_LOCK:
            loaded = _MODELS.get(key)
            if loaded is None:
                loaded = self._start_server()
                if not _MODELS:
                    atexit.register(_close_models)
                _MODELS[key] = loaded
        return loaded

    def _start_server(self) -> _LoadedModel:
        xllamacpp = _import_xllamacpp()
        slots = self.n_parallel or default_slots(self.n_threads)
        socket_dir = tempfile.mkdtemp(prefix="reflex-llama-")
        start = time.perf_counter()
        try:
            # Leaves Python's SIGINT handler alone (llama-server's own would swallow Ctrl+C):
            # tests/test_lm.py::test_real_model_keeps_ctrl_c checks it on each xllamacpp upgrade.
            server = xllamacpp.Server(_server_params(xllamacpp, self, slots, socket_dir))
        except (ValueError, OSError, RuntimeError) as exc:
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise lm15.ConfigurationError(
                f"cannot load model {self.model_path}: {exc} (not a model llama.cpp can read?)"
            ) from exc
        return _LoadedModel(server, time.perf_counter() - start, slots=slots, socket_dir=socket_dir)

    def _payload(self, request: lm15.Request, loaded: _LoadedModel) -> dict[str, Any]:
        config = request.config
        temperature = self.temperature if config.temperature is None else config.temperature
        seed = config.seed
        if seed is None:
            seed = self.seed if not temperature else next(loaded.seeds)
        payload: dict[str, Any] = {
            "messages": _chat_messages(request),
            "temperature": temperature,
            "max_tokens": config.max_tokens or self.max_tokens,
            "seed": seed,
            "cache_prompt": getattr(self, "prompt_cache", True),  # an engine pickled before the setting existed
        }
        if config.stop:
            payload["stop"] = list(config.stop)
        response_format = _server_response_format(config.response_format)
        if response_format is not None:
            payload["response_format"] = response_format
        for name in ("top_p", "top_k", "frequency_penalty", "presence_penalty"):
            if getattr(config, name) is not None:
                payload[name] = getattr(config, name)
        return payload

    def complete(self, request: lm15.Request) -> lm15.Response:
        if request.tools:
            raise lm15.UnsupportedFeatureError("the embedded model does not call tools", feature="tools")
        if request.config.logprobs is not None:
            raise lm15.UnsupportedFeatureError(
                "the embedded engine does not return logprobs", feature="logprobs"
            )
        loaded = self.load()
        result = loaded.server.handle_chat_completions(self._payload(request, loaded))
        error = _error_of(result)
        if error is not None:
            raise error
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        return lm15.Response(
            id=result.get("id") or None,
            model=request.model,
            message=lm15.Message.assistant((lm15.TextPart(choice["message"].get("content") or ""),)),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            usage=lm15.Usage(
                input_tokens=usage.get("prompt_tokens"),
                output_tokens=usage.get("completion_tokens"),
                total_tokens=usage.get("total_tokens"),
                cache_read_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
            ),
        )

    def stream(self, request: lm15.Request) -> Iterator[Any]:
        """One complete generation replayed as events: the caller sees the same text, just later."""
        return lm15.response_to_events(self.complete(request))

    def close(self) -> None:
        """Nothing to release: the loaded model is shared with other engines and lives for the process."""

    def dump_state(self) -> dict[str, Any]:
        """Settings to rebuild this engine (DSPy saves it with the program); never the weights."""
        state: dict[str, Any] = {
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "n_parallel": self.n_parallel,
            "seed": self.seed,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "extra_buffers": self.extra_buffers,
        }
        if self.embedded is not None:
            state["embedded"] = self.embedded
        else:
            state["model_path"] = self.model_path
        return state

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> LlamaCppEngine:
        settings = dict(state)
        embedded = settings.pop("embedded", None)
        model_path = settings.pop("model_path", None)
        if embedded is None and model_path is None:
            raise UsageError("saved LlamaCppEngine state names no model (neither embedded nor model_path)")
        path = embedded_model_path(embedded) if embedded is not None else check_gguf(Path(model_path))
        return cls(path, embedded=embedded, **settings)
