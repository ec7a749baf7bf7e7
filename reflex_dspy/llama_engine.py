"""A llama.cpp model as a dspy 3.4 custom LM engine: `complete(Request) -> Response`.

One model is loaded per (file, context size) per process and shared by every engine that names
it, behind one lock: the llama.cpp object is not thread-safe, and the task and reasoning models
are often the same embedded model. When DSPy's `JSONAdapter` sends a JSON schema, it becomes a
llama.cpp grammar, so replies always parse. `llama_cpp` is imported only when a model loads.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dspy import lm15

from reflex_dspy.errors import UsageError
from reflex_dspy.model_files import _INSTALL_HINT, _check_gguf, embedded_model_path

# Engine defaults. Greedy decoding makes runs reproducible. 256 tokens is ample for the short
# answers a 0.5B CPU model is given, and bounds one that loops: a bad prompt makes it repeat
# itself to the limit, at ~27 tokens/s, on every example (the reasoning model asks for more).
DEFAULT_N_CTX = 4096
DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.0
DEFAULT_SEED = 1234


@dataclass
class _LoadedModel:
    llama: Any  # llama_cpp.Llama
    lock: threading.Lock  # one per model, not per engine: engines sharing a model share its lock
    load_seconds: float


# One loaded model per (path, n_ctx) per process: the task model and the reflection model are
# often the same embedded model, and 0.5B parameters must not sit in memory twice.
_MODELS: dict[tuple[str, int], _LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def _close_models() -> None:
    """Free loaded models before interpreter teardown: llama.cpp's own `__del__` runs too late
    then (its C bindings are already gone) and prints a TypeError traceback at exit."""
    for loaded in _MODELS.values():
        loaded.llama.close()
    _MODELS.clear()


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise lm15.ConfigurationError(f"llama-cpp-python is not installed ({exc}): {_INSTALL_HINT}") from None
    return llama_cpp


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


def _llama_response_format(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """lm15's canonical response_format → llama-cpp-python's, which compiles the schema to a grammar.

    llama-cpp-python reads `{"type": "json_object", "schema": ...}` (llama_chat_format.
    _grammar_for_response_format); without a schema it constrains to any JSON object.
    """
    if response_format is None:
        return None
    if response_format.get("type") == "json_schema":
        return {"type": "json_object", "schema": response_format["schema"]}
    return {"type": "json_object"}


def _default_threads() -> int:
    """The CPUs this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_has_amx() -> bool:
    """Whether the CPU advertises Intel AMX (Linux only; elsewhere we cannot tell, so no)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return False
    return "amx_tile" in flags.split()


@contextlib.contextmanager
def _without_extra_buffers() -> Iterator[None]:
    """Load a model with llama.cpp's extra weight buffers (AMX, repacking) turned off.

    On a VM whose CPU advertises AMX, a natively built llama.cpp 0.3.36 crashes the whole
    process with SIGSEGV in ggml_backend_amx_mul_mat on the first multi-token batch. The
    `Llama` constructor has no switch for `use_extra_bufts`, so its default-params factory is
    wrapped for the duration of the load (loads are serialised by `_MODELS_LOCK`).
    """
    import llama_cpp.llama_cpp as low

    original = low.llama_model_default_params
    if not hasattr(original(), "use_extra_bufts"):  # an older llama.cpp without the switch
        yield
        return

    def params() -> Any:
        value = original()
        value.use_extra_bufts = False
        return value

    low.llama_model_default_params = params
    try:
        yield
    finally:
        low.llama_model_default_params = original


class LlamaCppEngine:
    """A dspy 3.4 custom engine: `complete(Request) -> Response` with an in-process llama.cpp model.

    Holds only plain settings (it is deep-copied and saved with programs); the `llama_cpp.Llama`
    is loaded on first use into a process-wide cache shared by every engine on the same file.
    Calls are serialised per model because a Llama object is not thread-safe and DSPy evaluates
    in threads. A generation is deterministic at temperature 0; at higher temperatures the
    sampling seed advances from `seed` call after call, so repeated samples differ.
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
        seed: int = DEFAULT_SEED,
        temperature: float = DEFAULT_TEMPERATURE,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        extra_buffers: bool | None = None,
    ):
        """`embedded` names the built-in model the file came from, so a saved program records the
        name ("qwen") rather than this machine's cache path. `extra_buffers` (llama.cpp's AMX and
        weight-repacking buffers) defaults to off on CPUs with AMX, where it crashes, and on elsewhere."""
        self.model_path = str(model_path)
        self.embedded = embedded
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.seed = seed
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_buffers = extra_buffers

    def load(self) -> _LoadedModel:
        """The shared loaded model, loading it now if this process has not yet."""
        key = (self.model_path, self.n_ctx)
        loaded = _MODELS.get(key)
        if loaded is not None:
            return loaded
        with _MODELS_LOCK:
            loaded = _MODELS.get(key)
            if loaded is None:
                llama_cpp = _import_llama_cpp()
                extra = not _cpu_has_amx() if self.extra_buffers is None else self.extra_buffers
                start = time.perf_counter()
                try:
                    with contextlib.nullcontext() if extra else _without_extra_buffers():
                        llama = llama_cpp.Llama(
                            model_path=self.model_path,
                            n_ctx=self.n_ctx,
                            n_threads=self.n_threads or _default_threads(),
                            seed=self.seed,
                            verbose=False,
                        )
                except (ValueError, OSError, RuntimeError) as exc:
                    raise lm15.ConfigurationError(f"cannot load model {self.model_path}: {exc}") from exc
                loaded = _LoadedModel(llama, threading.Lock(), time.perf_counter() - start)
                if not _MODELS:
                    atexit.register(_close_models)
                _MODELS[key] = loaded
        return loaded

    def complete(self, request: lm15.Request) -> lm15.Response:
        config = request.config
        if request.tools:
            raise lm15.UnsupportedFeatureError("the embedded model does not call tools", feature="tools")
        if config.logprobs is not None:
            raise lm15.UnsupportedFeatureError(
                "the embedded engine does not return logprobs", feature="logprobs"
            )
        kwargs: dict[str, Any] = {
            "messages": _chat_messages(request),
            "temperature": self.temperature if config.temperature is None else config.temperature,
            "max_tokens": config.max_tokens or self.max_tokens,
            "stop": list(config.stop),
            "seed": config.seed,  # None: continue this model's seeded sequence
            "response_format": _llama_response_format(config.response_format),
        }
        for name in ("top_p", "top_k", "frequency_penalty", "presence_penalty"):
            if getattr(config, name) is not None:
                kwargs[name] = getattr(config, name)
        loaded = self.load()
        with loaded.lock:
            try:
                result = loaded.llama.create_chat_completion(**kwargs)
            except ValueError as exc:
                if "exceed context window" in str(exc):
                    raise lm15.ContextLengthError(str(exc), provider="llama.cpp") from exc
                raise lm15.InvalidRequestError(str(exc), provider="llama.cpp") from exc
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
        path = embedded_model_path(embedded) if embedded is not None else _check_gguf(Path(model_path))
        return cls(path, embedded=embedded, **settings)
